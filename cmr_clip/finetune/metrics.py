"""Per-label metrics of a fine-tuned study classifier.

For every label (a finding of a multi-label head, a class of a single-label head taken one-vs-rest) the
decision threshold is the one that maximises F1 on the validation split; AUC and F1 at that threshold are
then reported on the evaluation split. A label whose validation or evaluation studies hold one class only
gets `null` AUC (it is undefined) rather than a misleading number. Regression reports MAE and Pearson r.
"""

from __future__ import annotations

import numpy as np


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The score threshold ("present where score >= threshold") that maximises F1 on these studies."""
    from sklearn.metrics import precision_recall_curve

    if truth.sum() == 0:
        return float(np.inf)
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))])


def _auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores)) if 0 < truth.sum() < len(truth) else None


def binary_label_metrics(val_scores: np.ndarray, val_truth: np.ndarray, scores: np.ndarray,
                         truth: np.ndarray) -> dict:
    """AUC and F1 at the validation-chosen threshold for one label (scores: higher means present)."""
    from sklearn.metrics import f1_score

    threshold = best_f1_threshold(val_scores, val_truth)
    return {"auc": _auc(scores, truth), "f1": float(f1_score(truth, scores >= threshold, zero_division=0)),
            "threshold": threshold, "validation_auc": _auc(val_scores, val_truth),
            "positives": int(truth.sum()), "studies": int(len(truth))}


def classification_metrics(problem_type: str, label_names: list[str], val_scores: np.ndarray,
                           val_truth: np.ndarray, scores: np.ndarray, truth: np.ndarray) -> dict:
    """`{"per_label": {name: {...}}, "macro_auc": ...}` (classification) or `{"mae", "pearson_r"}`.

    scores: `(studies, num_labels)` probabilities (sigmoid or softmax) or regression outputs; truth:
    multi-hot `(studies, num_labels)`, class indices `(studies,)` or targets.
    """
    if problem_type == "regression":
        predicted, target = scores.reshape(len(scores), -1)[:, 0], truth.reshape(len(truth), -1)[:, 0]
        r = float(np.corrcoef(predicted, target)[0, 1]) if len(target) > 1 and target.std() > 0 else None
        return {"mae": float(np.abs(predicted - target).mean()), "pearson_r": r, "studies": int(len(target))}
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
