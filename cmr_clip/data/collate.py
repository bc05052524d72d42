"""The one collator: study examples -> a model batch.

Every path that feeds studies to a model (CMR-CLIP and CMR-TARGET training, fine-tuning, evaluation, the
index) takes its batches from `StudyCollator`: uint8 frames (T, H, W) per study become normalised
`pixel_values_videos` (B, T, 3, H, W) through the corpus's study processor (zero frames, empty slots, stay
zero), impressions become token ids through a text encoder, and `labels` and `index` are stacked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass
class ImpressionTokenizer:
    """Impressions -> `input_ids` and `attention_mask` (padded to the longest, truncated to `max_length`)
    with a CMR-CLIP text tower's tokenizer. A class rather than a closure so that data loader workers can
    pickle it."""

    tokenizer: object
    max_length: int = 128

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


@dataclass
class StudyCollator:
    """Examples with `frames` (uint8 (T, H, W)) and optionally `impression`, `labels` and `index` -> a batch.

    Args:
        study_processor: the `CMRStudyProcessor` the corpus was prepared with; its `normalise` turns uint8
            frames into the model's pixel values.
        encode_text: impressions -> a mapping of tensors merged into the batch: an `ImpressionTokenizer` for
            CMR-CLIP, `CMRTargetProcessor.encode_text` for CMR-TARGET. None: the batch has no text.

    Returns (from a call): `pixel_values_videos` (B, T, 3, H, W), the text encoder's tensors, and `labels`
    and `index` stacked when the examples carry them.
    """

    study_processor: object
    encode_text: Callable[[list[str]], Mapping[str, torch.Tensor]] | None = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        frames = torch.stack([example["frames"] for example in examples])
        batch = {"pixel_values_videos": self.study_processor.normalise(frames)}
        if self.encode_text is not None:
            batch.update(self.encode_text([example["impression"] for example in examples]))
        for key in ("labels", "index"):
            if key in examples[0]:
                batch[key] = torch.stack([torch.as_tensor(example[key]) for example in examples])
        return batch
