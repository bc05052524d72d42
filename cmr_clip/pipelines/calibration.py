"""Per-finding calibration of zero-shot probabilities, and what a finding needs to be assessed.

Calibration maps the raw finding probability (a sigmoid of a scaled cosine difference, see `scoring.py`)
to a probability that matches how often the finding is present on labelled validation studies. Two
methods, both monotone non-decreasing in the raw score, so a calibrated set ranks studies as the raw one
does (AUC unchanged):

- `platt`: `sigmoid(slope * logit(raw) + intercept)`, a one-feature logistic regression, its slope kept at or
  above zero (an anti-correlated finding gets a flat map: the validation prevalence);
- `isotonic`: an isotonic regression, stored as its step points and interpolated between them.

The maps are fitted (with scikit-learn) by the evaluation (`evaluation/zero_shot.py`, `fit_finding`); this
module only applies them and needs numpy alone, so it also runs as Hub remote code.

A prompt set stores the fitted maps under `calibration` (`{"version": 1, "method", "fitted_on",
"findings": {name: parameters}}`), validated when a prompt set is read (`prompts.check_calibration`).

Coverage: a finding may list `requires_views` ("sequence/view" keys, any one of which suffices, e.g.
"lge/sax"); `missing_requirement` says why a study without any of them cannot be judged on that finding.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_VERSION = 1
METHODS = ("platt", "isotonic")
PARAMETERS = {"platt": ("slope", "intercept"), "isotonic": ("x", "y")}
EPSILON = 1e-6  # keeps logit() finite for raw probabilities of exactly 0 or 1


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def apply(method: str, parameters: dict, raw):
    """Calibrated probabilities for raw ones (a numpy array or a float tensor; the same type comes back)."""
    values = np.asarray(raw.detach().cpu().numpy() if hasattr(raw, "detach") else raw, dtype=np.float64)
    if method == "platt":
        out = 1.0 / (1.0 + np.exp(-(parameters["slope"] * logit(values) + parameters["intercept"])))
    else:
        out = np.interp(values, parameters["x"], parameters["y"])
    if hasattr(raw, "detach"):
        return raw.new_tensor(out)
    return out


def missing_requirement(required: list[str], views_found: set[str] | None) -> str | None:
    """Why a study with `views_found` ("sequence/view" keys) cannot be judged on a finding that needs any of
    `required`, or None when it can (or when the views are not known, e.g. for cached embeddings)."""
    if not required or views_found is None or views_found & set(required):
        return None
    return f"needs one of {', '.join(required)}; the study has {', '.join(sorted(views_found)) or 'no usable view'}"
