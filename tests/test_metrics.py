"""Evaluation's metric functions on inputs whose answers are worked out by hand: AUC where it is defined,
thresholds, MAE and Pearson r, retrieval ranks, and `with_interval` around any of them."""

from functools import partial

import numpy as np
import pytest
import torch

from cmr_clip.evaluation.classification import auc, classification_metrics, labelled, rank_auc, youden_threshold
from cmr_clip.evaluation.errors import EvaluationError
from cmr_clip.evaluation.intervals import with_interval
from cmr_clip.evaluation.regression import mean_absolute_error, pearson_r, regression_metrics
from cmr_clip.evaluation.retrieval import effective_rank, match_ranks, median_rank, recall_at_k, retrieval_metrics


def test_auc_counts_correctly_ordered_pairs_and_is_none_with_one_class():
    # pairs (positive, negative): (0.35, 0.1) right, (0.35, 0.4) wrong, (0.8, 0.1) and (0.8, 0.4) right: 3 of 4
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.1, 0.4, 0.35]), np.array([1, 1, 1])) is None
    assert auc(np.array([]), np.array([], dtype=int)) is None


def test_rank_auc_is_scikit_learns_auc_with_ties_and_none_with_one_class():
    """The bootstrap's fast AUC (Mann-Whitney U from ranks) gives scikit-learn's ROC AUC, ties included."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for n, levels in ((7, 3), (63, 10), (500, 1000)):  # few distinct scores: many ties
        scores = rng.integers(0, levels, n).astype(float)
        truth = (rng.random(n) < 0.3).astype(int)
        truth[:2] = [0, 1]
        assert rank_auc(scores, truth) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    assert rank_auc(np.array([0.2, 0.1, 0.9]), np.array([1, 0, 1])) == 1.0
    assert rank_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert rank_auc(np.array([0.2, 0.1]), np.array([1, 1])) is None


def test_labelled_leaves_out_studies_without_a_label():
    scores, truth = labelled(np.array([0.2, 0.5, 0.9]), np.array([0.0, np.nan, 1.0]))
    assert scores.tolist() == [0.2, 0.9] and truth.tolist() == [0, 1] and truth.dtype.kind == "i"


def test_youden_threshold_separates_the_classes_and_is_none_with_one_class():
    assert youden_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.8)
    assert youden_threshold(np.array([0.1, 0.2]), np.array([0, 0])) is None


def test_mae_and_pearson_on_known_values():
    predicted, truth = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])
    assert mean_absolute_error(predicted, truth) == pytest.approx(2.0)
    assert pearson_r(predicted, truth) == pytest.approx(1.0)
    assert pearson_r(-predicted, truth) == pytest.approx(-1.0)
    assert pearson_r(predicted, np.array([5.0, 5.0, 5.0])) is None
    assert pearson_r(np.array([1.0]), np.array([2.0])) is None


def test_regression_metrics_needs_enough_measured_studies():
    with pytest.raises(EvaluationError, match="at least 3 studies with a measured value, got 2"):
        regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, 2.0]))


def test_a_regression_head_reports_mae_and_pearson():
    figures = classification_metrics("regression", ["lvef"], None, None, np.array([[40.0], [50.0], [60.0]]),
                                      np.array([[42.0], [50.0], [58.0]]))
    assert figures == {"mae": pytest.approx(4 / 3), "pearson_r": pytest.approx(1.0), "studies": 3}


def test_match_ranks_break_ties_against_the_match():
    text = torch.eye(3)
    video = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0], [0.0, 1.0, 0.0]])
    # text i against video j scores video[j, i]: query 0 ranks its match first, query 1 second (0.5 < 1.0),
    # query 2 last (its match scores 0, tied with video 0 and below video 1).
    ranks = match_ranks(text, video)
    assert ranks["text_to_study"].tolist() == [1, 2, 3]
    assert recall_at_k(ranks["text_to_study"], 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranks["text_to_study"], 2) == pytest.approx(2 / 3)
    assert median_rank(ranks["text_to_study"]) == 2.0


def test_retrieval_metrics_of_a_perfect_match_and_chance():
    embeds = torch.randn(6, 4)
    figures = retrieval_metrics(embeds * 3.0, embeds)  # scale does not matter: embeddings are normalised
    assert figures["text_to_study_R@1"] == 1.0 and figures["study_to_text_median_rank"] == 1.0
    assert figures["chance_R@1"] == pytest.approx(1 / 6) and figures["chance_R@10"] == 1.0 and figures["n"] == 6


def test_with_interval_wraps_any_metric_and_is_reproducible():
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 20, 200).astype(float)
    figure = with_interval(partial(recall_at_k, k=5), ranks, resamples=200, seed=1)
    assert figure["value"] == pytest.approx(np.mean(ranks <= 5))
    assert figure["low"] < figure["value"] < figure["high"]
    assert with_interval(partial(recall_at_k, k=5), ranks, resamples=200, seed=1) == figure
    scores, truth = rng.normal(size=100), rng.integers(0, 2, 100)
    paired = with_interval(auc, scores + 2 * truth, truth, resamples=200)
    assert 0.5 < paired["low"] <= paired["value"] <= paired["high"] <= 1.0


def test_with_interval_gives_none_where_the_metric_is_undefined():
    assert with_interval(auc, np.arange(5.0), np.ones(5, dtype=int), resamples=20) == {"value": None, "low": None, "high": None}


@pytest.mark.parametrize("k", [1, 3, 7])
def test_effective_rank_counts_the_directions_embeddings_spread_over(k):
    """Points on +-e_1 .. +-e_k of a 16-dimensional space, each repeated, span k equal directions: rank k, whatever
    their lengths (embeddings are normalised first) and wherever the set is centred."""
    axes = np.eye(16)[:k]
    points = np.concatenate([axes, -axes] * 5) * np.random.default_rng(k).uniform(0.5, 3.0, (10 * k, 1))
    assert effective_rank(torch.tensor(points)) == pytest.approx(k, abs=1e-6)


def test_effective_rank_of_isotropic_embeddings_is_near_their_dimension_and_collapse_lowers_it():
    rng = np.random.default_rng(0)
    isotropic = torch.tensor(rng.normal(size=(4000, 8)))
    assert 7.6 < effective_rank(isotropic) <= 8.0
    # The same points squeezed towards one direction (a collapsed embedding): most of their spread in 1 of 8 axes.
    squeezed = isotropic * torch.tensor([1.0] + [0.01] * 7) + torch.tensor([0.0, 3.0] + [0.0] * 6)
    assert effective_rank(squeezed) < 2.5
    assert effective_rank(torch.ones(5, 8)) == 0.0  # one point, repeated: no spread at all
    nearly_one = torch.full((7, 3), 0.1)
    nearly_one[::2, 2] += 1e-13  # rows apart by rounding only
    assert effective_rank(nearly_one) == 0.0
    assert effective_rank(torch.ones(1, 8)) == 0.0  # a one-study test split
    with pytest.raises(ValueError, match=r"embeddings \(n, d\)"):
        effective_rank(torch.ones(8))
