"""Cross-modal retrieval metrics: Recall@K and median rank, text-to-study and study-to-text.

Row i of the text embeddings belongs to row i of the study embeddings. Ranks are 1-based: rank 1 means
the matching item scored highest. Ties are broken pessimistically (an equal score ranks ahead of the
match), so a constant model cannot look good. `match_ranks` gives the rank of every query in both
directions; `recall_at_k` and `median_rank` are metric functions over those ranks (so `with_interval`
can resample the queries). `effective_rank` says how many directions of the embedding space a set of
embeddings spreads over: a contrastive model that has collapsed onto a few (dimensional collapse) ranks its
studies along the same few axes for every question it is asked.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10)
DIRECTIONS = ("text_to_study", "study_to_text")


def ranks_of_matches(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of the diagonal element within each row of a square similarity matrix."""
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (one match per row), got shape {tuple(similarity.shape)}")
    matches = similarity.diagonal().unsqueeze(1)
    others_at_least_as_high = (similarity >= matches).sum(dim=1) - 1
    return others_at_least_as_high + 1


def match_ranks(text_embeds: torch.Tensor, video_embeds: torch.Tensor) -> dict[str, np.ndarray]:
    """direction -> the rank of each query's match, by dot product of the embeddings as given."""
    similarity = torch.as_tensor(text_embeds) @ torch.as_tensor(video_embeds).T
    return {direction: ranks_of_matches(matrix).cpu().numpy()
            for direction, matrix in zip(DIRECTIONS, (similarity, similarity.T))}


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose match ranks within the top k."""
    return float(np.mean(ranks <= k))


def median_rank(ranks: np.ndarray) -> float:
    return float(np.median(ranks))


def chance_recall(n: int, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """`chance_R@K`: the Recall@K of a random ranking of n items, K / n."""
    return {f"chance_R@{k}": min(1.0, k / n) for k in ks}


def retrieval_metrics(
    text_embeds: torch.Tensor, video_embeds: torch.Tensor, ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K (in [0, 1]) and median rank in both directions, from paired embeddings.

    Embeddings are L2-normalised here, so raw projections can be passed. Keys:
    `text_to_study_R@K`, `study_to_text_R@K`, `text_to_study_median_rank`, `study_to_text_median_rank`,
    and `chance_R@K` (K / n) for reference.
    """
    text = torch.nn.functional.normalize(torch.as_tensor(text_embeds).float(), dim=-1)
    video = torch.nn.functional.normalize(torch.as_tensor(video_embeds).float(), dim=-1)
    metrics: dict[str, float] = {"n": float(len(text))}
    for direction, ranks in match_ranks(text, video).items():
        for k in ks:
            metrics[f"{direction}_R@{k}"] = recall_at_k(ranks, k)
        metrics[f"{direction}_median_rank"] = median_rank(ranks)
    return {**metrics, **chance_recall(len(text), ks)}


def effective_rank(embeds: torch.Tensor) -> float:
    """The effective rank (Roy and Vetterli, 2007; RankMe, Garrido et al., 2023, for collapse in self-supervised
    learning) of a set of embeddings (n, d): exp of the entropy of their normalised singular values, after L2
    normalisation and centring. n points spread evenly over k orthogonal directions give about k; points on one
    line give 1; one point, or one point repeated, 0. A small value against the projection size is dimensional
    collapse: every zero-shot question is then answered along the same few axes."""
    x = torch.as_tensor(embeds).double()
    if x.dim() != 2:
        raise ValueError(f"effective_rank takes embeddings (n, d), got shape {tuple(x.shape)}")
    if len(x) < 2:
        return 0.0
    x = torch.nn.functional.normalize(x, dim=-1)
    singular = torch.linalg.svdvals(x - x.mean(dim=0))
    singular = singular[singular > 1e-9 * len(x) ** 0.5]  # the rows have unit length: below this is rounding
    if len(singular) == 0:
        return 0.0
    p = singular / singular.sum()
    return float(torch.exp(-(p * p.log()).sum()))
