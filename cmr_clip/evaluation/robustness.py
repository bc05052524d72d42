"""Embedding stability: how far a study's embedding moves when its frames are perturbed.

Two perturbations of the evaluation frames (middle frame per slot) of a prepared corpus split:
- `shuffle`: frames permuted within each view (the layout entry each frame came from, from the
  corpus's metadata; a study without it counts as one view);
- `drop`: a quarter of the non-empty frames set to zero frames, as frames of a missing view are.
The figure per study is the cosine between the perturbed and the original embedding.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ..data.dataset import StudyTextDataset
from ..embeddings import encode_frames


def view_groups(metadata: str, num_frames: int) -> list[np.ndarray]:
    """Slot indices grouped by the layout entry (view) they were drawn from."""
    used = json.loads(metadata).get("frames_used") if metadata else None
    if not used or len(used) != num_frames:
        return [np.arange(num_frames)]
    entries = [item.get("entry") if item else None for item in used]
    return [np.array([i for i, e in enumerate(entries) if e == key]) for key in dict.fromkeys(entries)]


def shuffle_within_views(frames: torch.Tensor, groups: list[np.ndarray], rng: np.random.Generator) -> torch.Tensor:
    out = frames.clone()
    for group in groups:
        out[group] = frames[rng.permutation(group)]
    return out


def drop_frames(frames: torch.Tensor, fraction: float, rng: np.random.Generator) -> torch.Tensor:
    present = np.flatnonzero((frames.flatten(1) != 0).any(1).numpy())
    dropped = rng.choice(present, size=int(round(fraction * len(present))), replace=False)
    out = frames.clone()
    out[dropped] = 0
    return out


@torch.no_grad()
def embedding_stability(model, processor, split, drop_fraction: float = 0.25, seed: int = 0,
                        batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per study, the cosine between the original embedding and the embedding after each perturbation."""
    rng = np.random.default_rng(seed)
    studies = StudyTextDataset(split)  # the evaluation frames: the middle of each slot
    metadata = split["metadata"] if "metadata" in split.column_names else [""] * len(split)
    original, shuffled, dropped = [], [], []
    for i in range(len(studies)):
        frames = studies[i]["frames"]
        groups = view_groups(metadata[i], frames.shape[0])
        original.append(frames)
        shuffled.append(shuffle_within_views(frames, groups, rng))
        dropped.append(drop_frames(frames, drop_fraction, rng))
    reference = encode_frames(model, processor.feature_extractor, torch.stack(original), batch_size)
    return {name: (encode_frames(model, processor.feature_extractor, torch.stack(videos), batch_size) * reference)
            .sum(-1).numpy() for name, videos in (("shuffle", shuffled), ("drop", dropped))}
