"""Prepared CMR-CLIP corpora as torch datasets (`StudyCollator`, in `collate`, makes their model batches), and
the training samplers whose order depends only on (seed, epoch), so that a resumed run sees what an
uninterrupted one would.

A prepared corpus (see `cmr_clip.data.prepare`) is a `datasets.DatasetDict` whose rows hold a study's
candidate frames compactly: `frames`, uint8 (L, H, W), the concatenated frames of the layout's entries in
order, and `slots`, int32 (T, 2), for each of the model's T frames the range `[a, b)` of `frames` it is
drawn from (empty: a zero frame). At evaluation each slot takes the middle frame of its range, in
training a random one (the release's random frame per segment). The impression is in `impression`.
"""

from __future__ import annotations

import numpy as np
import torch

from .augment import Augmentation, choose_frames, example_rng


class StudyTextDataset(torch.utils.data.Dataset):
    """A split of a prepared corpus: yields uint8 frames (T, H, W) and the impression for each study.

    With `train=True`, each slot's frame is drawn at random and the study is augmented by `augmentation`
    (None: not augmented), from a generator seeded by (seed, epoch, index); call `set_epoch` at the start
    of every epoch.
    """

    def __init__(self, split, train: bool = False, seed: int = 0, augmentation: Augmentation | None = None):
        self.split = split.with_format("torch", columns=["frames", "slots"], output_all_columns=True)
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.augmentation = augmentation

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        row = self.split[index]
        rng = example_rng(self.seed, self.epoch, index) if self.train else None
        # Arrays with a variable first dimension come back from `datasets` as int64: back to uint8.
        frames = choose_frames(row["frames"], row["slots"], rng).to(torch.uint8)
        impression = row["impression"]
        if self.train and self.augmentation is not None:
            frames = self.augmentation(frames, rng)
            impression = self.augmentation.impression(impression, rng)
        return {"frames": frames, "impression": impression, "index": index}


class LabelledStudies(torch.utils.data.Dataset):
    """A corpus split's uint8 frames with each study's target (a row of `targets`), for fine-tuning."""

    def __init__(self, split, targets: np.ndarray, train: bool, seed: int, augmentation: Augmentation | None):
        self.studies = StudyTextDataset(split, train=train, seed=seed, augmentation=augmentation)
        self.targets = torch.as_tensor(targets)

    def set_epoch(self, epoch: int) -> None:
        self.studies.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict:
        return {"frames": self.studies[index]["frames"], "labels": self.targets[index]}


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch)."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.length).tolist())


class BalancedEpochSampler(torch.utils.data.Sampler):
    """Class-balanced sampling with replacement (each class drawn equally often on average), a draw that
    depends only on (seed, epoch)."""

    def __init__(self, classes: np.ndarray, seed: int):
        counts = np.bincount(classes)
        weights = 1.0 / counts[classes]
        self.probabilities, self.seed, self.epoch = weights / weights.sum(), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.probabilities)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(rng.choice(len(self.probabilities), len(self.probabilities), p=self.probabilities).tolist())
