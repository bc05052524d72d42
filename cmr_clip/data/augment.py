"""Training-time choices on a prepared study: which frame fills each slot, the release's augmentation
(random resized crop, random horizontal flip), the same for every frame of a study, and which sentences of
its impression the text tower reads.

Randomness comes from a generator seeded by (seed, epoch, example index), so a resumed run draws exactly
what an uninterrupted run would, whatever the data loader prefetched before the interruption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..processing.layout import pick_slots
from ..processing.processing_cmr_target import split_sentences


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def choose_frames(frames, slots, rng: np.random.Generator | None) -> torch.Tensor:
    """One frame per slot of a prepared study, chosen by the processor's slot rule (`pick_slots`: the middle
    of the slot's range, or a random member when `rng` is given); an empty range gives a zero frame.
    (L, H, W) -> (T, H, W), a tensor of `frames`' dtype; `frames` and `slots` are tensors or numpy arrays (only
    the chosen frames are copied)."""
    picks = pick_slots(slots.tolist(), rng)
    if len(frames) == 0:  # no candidate frame at all: every slot is empty
        return torch.zeros((len(picks), *frames.shape[1:]), dtype=torch.as_tensor(frames[:0]).dtype)
    index = [0 if p is None else p for p in picks]
    chosen = torch.from_numpy(frames[index]) if isinstance(frames, np.ndarray) else frames[torch.tensor(index)]
    empty = torch.tensor([p is None for p in picks])
    if empty.any():
        chosen = chosen.clone()
        chosen[empty] = 0
    return chosen


@dataclass
class Augmentation:
    """The release's training augmentation: random resized crop (area `scale`, aspect `ratio`) back to the
    frame size, and a horizontal flip with probability `flip`; and, with `sentence_keep` < 1, a random subset
    of the impression's sentences (see `impression`)."""

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    sentence_keep: float = 1.0
    sentence_pairs: int = 0
    """Also pair each study with this many sentences of its whole impression, drawn at random without
    replacement (all of them where it has fewer; see `texts`), for the sentence-level contrastive loss
    (`TrainConfig.sentence_loss`); 0: none."""

    def __post_init__(self):
        if self.sentence_pairs < 0:
            raise ValueError(f"sentence_pairs must be 0 (none) or a number of sentences, got {self.sentence_pairs}.")
        if not 0 < self.sentence_keep <= 1:
            raise ValueError(f"sentence_keep must be in (0, 1], got {self.sentence_keep}: the probability of keeping "
                             "each sentence of a training impression (1 keeps them all).")

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        return 0, 0, height, width

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """uint8 (T, H, W) -> uint8 (T, H, W), one crop and one flip decision for the whole study."""
        height, width = frames.shape[-2:]
        top, left, h, w = self.crop_box(height, width, rng)
        crop = frames[:, top : top + h, left : left + w].float()[:, None]
        resized = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False, antialias=h > height)
        out = resized[:, 0].round().clamp(0, 255).to(torch.uint8)
        if rng.uniform() < self.flip:
            out = out.flip(-1)
        return out

    def impression(self, text: str, rng: np.random.Generator) -> str:
        """Each sentence of `text` kept with probability `sentence_keep`, in their order, at least one (a
        random one when the draw keeps none); the whole text when `sentence_keep` is 1.

        Reading a few sentences at a time ties each finding's sentence to the study on its own, as a
        zero-shot prompt is read, instead of only as one voice among the impression's others."""
        if self.sentence_keep >= 1:
            return text
        sentences = split_sentences(text)
        if len(sentences) < 2:
            return text
        keep = rng.uniform(size=len(sentences)) < self.sentence_keep
        if not keep.any():
            keep[rng.integers(len(sentences))] = True
        return " ".join(s for s, k in zip(sentences, keep) if k)

    def texts(self, text: str, rng: np.random.Generator) -> dict:
        """A training study's texts: `impression` (see `impression`) and, with `sentence_pairs`, `drawn`, that
        many sentences of the whole impression in their order, and `sentences`, all of them (what the study is
        known to say: the matches of the sentence-level loss)."""
        texts = {"impression": self.impression(text, rng)}
        if self.sentence_pairs:
            sentences = split_sentences(text) or [text]
            chosen = sorted(rng.choice(len(sentences), size=min(self.sentence_pairs, len(sentences)), replace=False))
            texts.update(drawn=[sentences[i] for i in chosen], sentences=sentences)
        return texts
