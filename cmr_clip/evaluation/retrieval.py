"""Cross-modal retrieval metrics: Recall@K and median rank, text-to-study and study-to-text.

Row i of the text embeddings belongs to row i of the study embeddings. Ranks are 1-based: rank 1 means
the matching item scored highest. Ties are broken pessimistically (an equal score ranks ahead of the
match), so a constant model cannot look good.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10)


def ranks_of_matches(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of the diagonal element within each row of a square similarity matrix."""
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (one match per row), got shape {tuple(similarity.shape)}")
    matches = similarity.diagonal().unsqueeze(1)
    others_at_least_as_high = (similarity >= matches).sum(dim=1) - 1
    return others_at_least_as_high + 1


def retrieval_metrics(
    text_embeds: torch.Tensor, video_embeds: torch.Tensor, ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K (in [0, 1]) and median rank in both directions, from paired embeddings.

    Embeddings are L2-normalised here, so raw projections can be passed. Keys:
    `text_to_study_R@K`, `study_to_text_R@K`, `text_to_study_median_rank`, `study_to_text_median_rank`,
    and `chance_R@K` (K / n) for reference.
    """
    text = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
    video = torch.nn.functional.normalize(video_embeds.float(), dim=-1)
    similarity = text @ video.T
    n = similarity.shape[0]
    metrics: dict[str, float] = {"n": float(n)}
    for direction, matrix in (("text_to_study", similarity), ("study_to_text", similarity.T)):
        ranks = ranks_of_matches(matrix).cpu().numpy()
        for k in ks:
            metrics[f"{direction}_R@{k}"] = float(np.mean(ranks <= k))
        metrics[f"{direction}_median_rank"] = float(np.median(ranks))
    for k in ks:
        metrics[f"chance_R@{k}"] = min(1.0, k / n)
    return metrics
