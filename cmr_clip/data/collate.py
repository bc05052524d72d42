"""The one collator: study examples -> a model batch.

Every path that feeds studies to a model (CMR-CLIP and CMR-TARGET training, fine-tuning, evaluation, the
index) takes its batches from `StudyCollator`: uint8 frames (T, H, W) per study become normalised
`pixel_values_videos` (B, T, 3, H, W) through the corpus's study processor (zero frames, empty slots, stay
zero), impressions become token ids through a text encoder, and `labels` and `index` are stacked.
"""

from __future__ import annotations

import hashlib
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


def sentence_key(sentence: str) -> int:
    """A sentence's identity for the sentence-level loss: a 63-bit hash of its words, case and white space
    ignored (stable across processes, unlike `hash`)."""
    words = " ".join(sentence.lower().split()).rstrip(" .")
    return int.from_bytes(hashlib.blake2b(words.encode(), digest_size=8).digest(), "big") >> 1


def sentence_keys(examples: list[dict]) -> dict[str, torch.Tensor]:
    """`sentence_keys` (M,): the keys of the studies' drawn sentences, study by study; `study_sentence_keys`
    (B, S): the keys of every sentence of each study's impression, padded with -1 (no key is negative)."""
    studies = [[sentence_key(s) for s in example["sentences"]] for example in examples]
    width = max(len(keys) for keys in studies)
    return {"sentence_keys": torch.tensor([sentence_key(s) for example in examples for s in example["drawn"]]),
            "study_sentence_keys": torch.tensor([keys + [-1] * (width - len(keys)) for keys in studies])}


@dataclass
class StudyCollator:
    """Examples with `frames` (uint8 (T, H, W)) and optionally `impression`, `labels` and `index` -> a batch.

    Args:
        study_processor: the `CMRStudyProcessor` the corpus was prepared with; its `normalise` turns uint8
            frames into the model's pixel values.
        encode_text: impressions -> a mapping of tensors merged into the batch: an `ImpressionTokenizer` for
            CMR-CLIP, `CMRTargetProcessor.encode_text` for CMR-TARGET. None: the batch has no text.

    Returns (from a call): `pixel_values_videos` (B, T, 3, H, W), the text encoder's tensors, and `labels`
    and `index` stacked when the examples carry them. Examples with `drawn` sentences (and their `sentences`)
    add their encoding as `sentence_input_ids` and `sentence_attention_mask` (M rows, study by study), and
    `sentence_keys` and `study_sentence_keys` (see `sentence_keys`).
    """

    study_processor: object
    encode_text: Callable[[list[str]], Mapping[str, torch.Tensor]] | None = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        frames = torch.stack([example["frames"] for example in examples])
        batch = {"pixel_values_videos": self.study_processor.normalise(frames)}
        if self.encode_text is not None:
            batch.update(self.encode_text([example["impression"] for example in examples]))
            if "drawn" in examples[0]:  # sentence pairs (`Augmentation.sentence_pairs`)
                encoded = self.encode_text([s for example in examples for s in example["drawn"]])
                batch.update({f"sentence_{name}": value for name, value in encoded.items()})
                batch.update(sentence_keys(examples))
        for key in ("labels", "index"):
            if key in examples[0]:
                batch[key] = torch.stack([torch.as_tensor(example[key]) for example in examples])
        return batch
