"""Prepared CMR-CLIP corpora as torch datasets, and the collator that makes model batches.

A prepared corpus (see `cmr_clip.data.prepare`) is a `datasets.DatasetDict` whose rows hold a study's
candidate frames compactly: `frames`, uint8 (L, H, W), the concatenated frames of the layout's entries in
order, and `slots`, int32 (T, 2), for each of the model's T frames the range `[a, b)` of `frames` it is
drawn from (empty: a zero frame). At evaluation each slot takes the middle frame of its range, in
training a random one (the release's random frame per segment). The impression is in `impression`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .augment import Augmentation, choose_frames, example_rng

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class StudyTextDataset(torch.utils.data.Dataset):
    """A split of a prepared corpus: yields uint8 frames (T, H, W) and the impression for each study.

    With `train=True`, each slot's frame is drawn at random and the study is augmented, from a generator
    seeded by (seed, epoch, index); call `set_epoch` at the start of every epoch.
    """

    def __init__(self, split, train: bool = False, seed: int = 0, augmentation: Augmentation | None = None):
        self.split = split.with_format("torch", columns=["frames", "slots"], output_all_columns=True)
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.augmentation = augmentation if augmentation is not None else Augmentation()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        row = self.split[index]
        rng = example_rng(self.seed, self.epoch, index) if self.train else None
        frames = choose_frames(row["frames"], row["slots"], rng)
        if self.train and self.augmentation is not None:
            frames = self.augmentation(frames, rng)
        return {"frames": frames, "impression": row["impression"], "index": index}


@dataclass
class StudyTextCollator:
    """uint8 frames -> normalised `pixel_values_videos` (B, T, 3, H, W); impressions -> token ids.

    Empty slots are zero after normalisation, as the release's padding frames were.
    """

    tokenizer: object
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    max_length: int = 128

    def __call__(self, examples: list[dict]) -> dict:
        frames = torch.stack([e["frames"] for e in examples])  # (B, T, H, W) uint8
        pixel_values = normalise(frames, self.image_mean, self.image_std)
        text = self.tokenizer(
            [e["impression"] for e in examples],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {"pixel_values_videos": pixel_values, "input_ids": text["input_ids"],
                 "attention_mask": text["attention_mask"]}
        batch["index"] = torch.tensor([e["index"] for e in examples])
        return batch


def normalise(frames: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (..., T, H, W) -> float (..., T, 3, H, W); all-zero frames stay zero (padding)."""
    x = frames.float().div(255.0).unsqueeze(-3).expand(*frames.shape[:-2], 3, *frames.shape[-2:])
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = (x - mean_t) / std_t
    padding = (frames.flatten(-2) == 0).all(-1)
    return out.masked_fill(padding[..., None, None, None], 0.0)
