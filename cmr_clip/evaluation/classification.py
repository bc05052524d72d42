"""Metrics of per-study scores for binary labels (numpy in, floats and dicts out): ROC AUC where it is
defined, decision thresholds (Youden's J, best F1), the expected calibration error of probabilities, and the
per-label figures of a fine-tuned classifier.

An AUC needs both classes among the studies scored; where one is missing it is undefined and reported as
None rather than as a misleading number. A study without a label carries NaN as its truth and is left out
(`labelled`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score, roc_curve

from .regression import known, mean_absolute_error, pearson_r


def labelled(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The studies with a label: their scores and their truth as 0/1 integers."""
    scores, truth = known(scores, truth)
    return scores, truth.astype(int)


def has_both_classes(truth: np.ndarray) -> bool:
    return len(np.unique(truth)) == 2


def auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """ROC AUC of `scores` (higher: more likely present) against 0/1 `truth`; None unless both classes are present."""
    return float(roc_auc_score(truth, scores)) if has_both_classes(truth) else None


def rank_auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """The ROC AUC `auc` gives, as the Mann-Whitney U statistic over n1 x n2 (tied scores share their mean
    rank, so a tie counts half): ranks alone, fast enough for thousands of bootstrap resamples."""
    truth = np.asarray(truth)
    if not has_both_classes(truth):
        return None
    positive = truth == 1
    n1, n2 = int(positive.sum()), int((~positive).sum())
    return float((rankdata(scores)[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def reliability_bins(probabilities: np.ndarray, truth: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width probability bins over [0, 1] (the last one closed): per non-empty bin its `count`, mean predicted
    probability (`confidence`) and observed frequency of the positive class (`frequency`)."""
    probabilities, truth = np.asarray(probabilities, dtype=float), np.asarray(truth, dtype=float)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "count": int((which == b).sum()),
             "confidence": float(probabilities[which == b].mean()), "frequency": float(truth[which == b].mean())}
            for b in range(bins) if (which == b).any()]


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = 10) -> float | None:
    """ECE (Guo et al., 2017): the count-weighted mean over equal-width bins of |observed frequency - mean
    predicted probability|; None for no studies."""
    if len(probabilities) == 0:
        return None
    table = reliability_bins(probabilities, truth, bins)
    return float(sum(b["count"] * abs(b["frequency"] - b["confidence"]) for b in table) / len(probabilities))


def youden_threshold(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """The score threshold that maximises Youden's J (TPR - FPR), at most 1; None with one class only."""
    if not has_both_classes(truth):
        return None
    fpr, tpr, cut = roc_curve(truth, scores)
    return float(min(cut[int(np.argmax(tpr - fpr))], 1.0))


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The score threshold ("present where score >= threshold") that maximises F1 on these studies."""
    if truth.sum() == 0:
        return float(np.inf)
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))])


def binary_label_metrics(val_scores: np.ndarray, val_truth: np.ndarray, scores: np.ndarray,
                         truth: np.ndarray) -> dict:
    """AUC and F1 at the validation-chosen (best F1) threshold for one label (scores: higher means present)."""
    threshold = best_f1_threshold(val_scores, val_truth)
    return {"auc": auc(scores, truth), "f1": float(f1_score(truth, scores >= threshold, zero_division=0)),
            "threshold": threshold, "validation_auc": auc(val_scores, val_truth),
            "positives": int(truth.sum()), "studies": int(len(truth))}


def classification_metrics(problem_type: str, label_names: list[str], val_scores: np.ndarray,
                           val_truth: np.ndarray, scores: np.ndarray, truth: np.ndarray) -> dict:
    """A fine-tuned study classifier's figures: `{"per_label": {name: {...}}, "macro_auc": ...}` (plus
    `accuracy` for a single-label head) or, for regression, `{"mae", "pearson_r", "studies"}`.

    Every label (a finding of a multi-label head, a class of a single-label head taken one-vs-rest) gets
    `binary_label_metrics`. scores: `(studies, num_labels)` probabilities (sigmoid or softmax) or regression
    outputs; truth: multi-hot `(studies, num_labels)`, class indices `(studies,)` or targets.
    """
    if problem_type == "regression":
        predicted, target = scores.reshape(len(scores), -1)[:, 0], truth.reshape(len(truth), -1)[:, 0]
        return {"mae": mean_absolute_error(predicted, target), "pearson_r": pearson_r(predicted, target),
                "studies": int(len(target))}
    if problem_type == "single_label_classification":
        val_truth = np.eye(len(label_names), dtype=int)[val_truth.astype(int)]
        truth_matrix = np.eye(len(label_names), dtype=int)[truth.astype(int)]
        accuracy = float((scores.argmax(1) == truth.astype(int)).mean())
    else:
        truth_matrix, accuracy = truth.astype(int), None
    per_label = {name: binary_label_metrics(val_scores[:, i], val_truth[:, i].astype(int), scores[:, i],
                                            truth_matrix[:, i])
                 for i, name in enumerate(label_names)}
    aucs = [m["auc"] for m in per_label.values() if m["auc"] is not None]
    result = {"per_label": per_label, "macro_auc": float(np.mean(aucs)) if aucs else None}
    if accuracy is not None:
        result["accuracy"] = accuracy
    return result
