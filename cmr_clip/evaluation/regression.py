"""Metrics of estimated values against measured ones (numpy in, floats out): mean absolute error and
Pearson r, for the zero-shot LVEF estimate and a fine-tuned regression head alike.

A study without a measurement carries NaN as its truth; `known` keeps the studies that have one.
"""

from __future__ import annotations

import numpy as np

from .errors import EvaluationError


def known(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The studies whose truth is known (not NaN): (predicted, truth) of those rows."""
    keep = ~np.isnan(truth)
    return predicted[keep], truth[keep]


def mean_absolute_error(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - truth)))


def pearson_r(predicted: np.ndarray, truth: np.ndarray) -> float | None:
    """Pearson correlation; None where it is undefined (fewer than two studies, or one truth value only)."""
    if len(truth) < 2 or truth.std() == 0:
        return None
    return float(np.corrcoef(predicted, truth)[0, 1])


def regression_metrics(predicted: np.ndarray, truth: np.ndarray, minimum: int = 3) -> dict[str, float | None]:
    """`mae`, `pearson_r` and `n` over the studies with a measured value; at least `minimum` are needed."""
    predicted, truth = known(predicted, truth)
    if len(truth) < minimum:
        raise EvaluationError(f"need at least {minimum} studies with a measured value, got {len(truth)}.")
    return {"mae": mean_absolute_error(predicted, truth), "pearson_r": pearson_r(predicted, truth), "n": float(len(truth))}
