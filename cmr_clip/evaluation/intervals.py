"""`with_interval`: a percentile-bootstrap 95% interval for any metric function over per-study arrays.

Studies are resampled with replacement (scikit-learn's `resample`, the same rows of every array), the
metric is recomputed on each resample, and the interval is the 2.5th to 97.5th percentile of those
values. Resamples on which the metric is undefined (it returns None or NaN, or raises `ValueError`, e.g.
an AUC drawn with one class only) are skipped; fewer than half valid gives no interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn.utils import resample


def with_interval(metric: Callable[..., float | None], *arrays: np.ndarray, resamples: int = 1000,
                  seed: int = 0) -> dict[str, float | None]:
    """{"value", "low", "high"}: `metric(*arrays)` and its percentile-bootstrap 95% interval (None where undefined)."""
    value = _defined(metric, arrays)
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(resamples):
        drawn = resample(*arrays, random_state=rng)
        drawn = drawn if isinstance(drawn, list) else [drawn]
        result = _defined(metric, drawn)
        if result is not None:
            values.append(result)
    if value is None or len(values) < resamples / 2:
        return {"value": value, "low": None, "high": None}
    low, high = np.percentile(values, [2.5, 97.5])
    return {"value": value, "low": float(low), "high": float(high)}


def _defined(metric: Callable[..., float | None], arrays) -> float | None:
    with warnings.catch_warnings():
        # A resample with one class only makes scikit-learn warn and return NaN; it is skipped above.
        warnings.simplefilter("ignore")
        try:
            result = metric(*arrays)
        except ValueError:
            return None
    return None if result is None or not np.isfinite(result) else float(result)
