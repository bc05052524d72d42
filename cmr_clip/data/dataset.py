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


class ArrowStudies:
    """A prepared split's `frames`, `slots` and `impression` read straight from its Arrow buffers (memory-mapped
    for a corpus loaded from disk): a study's frames are a zero-copy (L, H, W) uint8 view, and only the frames a
    draw picks are copied.

    `datasets`' own row access formats each row's whole candidate stack into an int64 tensor (a variable first
    dimension defeats its fast path), about 2 ms a study for the demo's 68 candidate frames of 64 x 64; a study's
    draw from the view takes about 0.2 ms. `ArrowStudies.of(split)` is None where a split is not laid out as
    `prepare` writes it (nulls, ragged frames, no `impression` column, columns chunked differently): then read
    it through `datasets`.
    """

    def __init__(self, chunks: list[tuple], rows: np.ndarray | None, length: int):
        self.chunks = chunks  # per Arrow chunk: (frames (F, H, W), frame offsets (n + 1,), slots (n, T, 2), impressions)
        self.starts = np.cumsum([0] + [len(chunk[1]) - 1 for chunk in chunks])
        self.rows = rows  # the split's index mapping (after `select`, `shuffle`), or None
        self.length = length

    @classmethod
    def of(cls, split) -> "ArrowStudies | None":
        try:
            table = split.data.table
            height, width = split.features["frames"].shape[-2:]
            time = split.features["slots"].shape[0]
            indices = getattr(split, "_indices", None)
            rows = None if indices is None else indices.column(0).to_numpy()
            frames, slots, texts = (table.column(name).chunks for name in ("frames", "slots", "impression"))
            if [len(c) for c in frames] != [len(c) for c in slots] or [len(c) for c in frames] != [len(c) for c in texts]:
                return None  # a row is looked up by chunk: the columns must share their chunk boundaries
            chunks = [_arrow_chunk(f, s, t, height, width, time) for f, s, t in zip(frames, slots, texts)]
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            return None
        if any(chunk is None for chunk in chunks):
            return None
        return cls(chunks, rows, len(split))

    def __len__(self) -> int:
        return self.length

    def study(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Study `index`'s candidate frames (a read-only (L, H, W) view), slots (T, 2) and impression."""
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} is out of range for a split of {self.length} studies")
        row = int(index % self.length if self.rows is None else self.rows[index])
        chunk = int(np.searchsorted(self.starts, row, side="right")) - 1
        frames, offsets, slots, texts = self.chunks[chunk]
        local = row - self.starts[chunk]
        return frames[offsets[local]:offsets[local + 1]], slots[local], texts[local].as_py()


def _arrow_chunk(frames, slots, texts, height: int, width: int, time: int) -> tuple | None:
    """One Arrow chunk's arrays as numpy views, or None when it is not laid out as expected."""
    frames = getattr(frames, "storage", frames)  # datasets' Array3D/Array2D are extension types over nested lists
    slots = getattr(slots, "storage", slots)
    studies = frames.offsets.to_numpy()
    images = frames.flatten()  # one entry per frame, each a list of pixel rows
    pixel_rows = images.flatten()
    if frames.null_count or images.null_count or pixel_rows.null_count or slots.null_count:
        return None
    if np.any(np.diff(images.offsets.to_numpy()) != height) or np.any(np.diff(pixel_rows.offsets.to_numpy()) != width):
        return None
    pixels = pixel_rows.flatten().to_numpy(zero_copy_only=True)
    slot_values = slots.flatten().flatten().to_numpy(zero_copy_only=True)
    if pixels.dtype != np.uint8 or slot_values.size != len(slots) * time * 2:
        return None
    return (pixels.reshape(-1, height, width), studies - studies[0], slot_values.reshape(len(slots), time, 2), texts)


class StudyTextDataset(torch.utils.data.Dataset):
    """A split of a prepared corpus: yields uint8 frames (T, H, W) and the impression for each study.

    With `train=True`, each slot's frame is drawn at random and the study is augmented by `augmentation`
    (None: not augmented), from a generator seeded by (seed, epoch, index); call `set_epoch` at the start
    of every epoch.

    Studies are read through `ArrowStudies` where the split allows it (`zero_copy=False`: always through
    `datasets`' row access, the same values, slower).
    """

    def __init__(self, split, train: bool = False, seed: int = 0, augmentation: Augmentation | None = None,
                 zero_copy: bool = True):
        self.split = split.with_format("torch", columns=["frames", "slots"], output_all_columns=True)
        self.arrow = ArrowStudies.of(split) if zero_copy else None
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.augmentation = augmentation

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getstate__(self) -> dict:
        # A data loader worker started by spawn gets the dataset pickled: send the split (which `datasets` pickles
        # as a reference to its memory-mapped files) and rebuild the views there, rather than copy every frame.
        state = self.__dict__.copy()
        state["arrow"] = self.arrow is not None
        return state

    def __setstate__(self, state: dict) -> None:
        zero_copy = state.pop("arrow")
        self.__dict__.update(state)
        self.arrow = ArrowStudies.of(self.split) if zero_copy else None

    def __getitem__(self, index: int) -> dict:
        rng = example_rng(self.seed, self.epoch, index) if self.train else None
        if self.arrow is not None:
            candidates, slots, impression = self.arrow.study(index)
            frames = choose_frames(candidates, slots, rng)
        else:
            row = self.split[index]
            # Arrays with a variable first dimension come back from `datasets` as int64: back to uint8.
            frames = choose_frames(row["frames"], row["slots"], rng).to(torch.uint8)
            impression = row["impression"]
        texts = {"impression": impression}
        if self.train and self.augmentation is not None:
            frames = self.augmentation(frames, rng)
            texts = self.augmentation.texts(impression, rng)
        return {"frames": frames, **texts, "index": index}


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
