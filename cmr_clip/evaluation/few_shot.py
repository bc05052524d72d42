"""Few-shot and supervised probes on frozen CMR-CLIP study embeddings.

Two probes for a binary finding: a prototype probe (embeddings centred on the support set's mean and
L2-normalised; the score is the cosine to the positive class mean minus the cosine to the negative class
mean, "present" when positive) and logistic regression (scikit-learn, on normalised embeddings,
"present" at probability 0.5). A k-shot episode draws k positive and k negative support studies at
random from the training pool and scores every test study; episodes are repeated with different draws
and each figure is reported as the mean over episodes with a 95% interval of that mean
(mean +- 1.96 * sd / sqrt(episodes), clipped to [0, 1], the range of every figure here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from .classification import auc, has_both_classes
from .errors import EvaluationError

DEFAULT_KS = (1, 2, 4, 8, 16, 32)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def prototype_probe(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """Score per query study: cosine to the positive prototype minus cosine to the negative one."""
    centre = support_x.mean(axis=0, keepdims=True)
    support, query = _normalise(support_x - centre), _normalise(query_x - centre)
    prototypes = _normalise(np.stack([support[support_y == c].mean(axis=0) for c in (0, 1)]))
    similarity = query @ prototypes.T
    return similarity[:, 1] - similarity[:, 0]


def logistic_probe(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """Score per query study: log-odds of a logistic regression fitted on the support set."""
    classifier = LogisticRegression(max_iter=1000).fit(_normalise(support_x), support_y)
    return classifier.decision_function(_normalise(query_x))


PROBES: dict[str, Callable] = {"prototype": prototype_probe, "logistic": logistic_probe}


def episode_metrics(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """AUC of the scores, accuracy and F1 of "present where score > 0"."""
    predicted = (scores > 0).astype(int)
    return {"auc": auc(scores, truth), "accuracy": float(accuracy_score(truth, predicted)),
            "f1": float(f1_score(truth, predicted, zero_division=0))}


def draw_support(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k positive and k negative studies, drawn without replacement."""
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in (0, 1)])


def mean_interval(values: list[float]) -> dict[str, float]:
    """Mean with a 95% normal interval of the mean, clipped to [0, 1]."""
    array = np.asarray(values, dtype=float)
    half = 1.96 * array.std(ddof=1) / np.sqrt(len(array)) if len(array) > 1 else 0.0
    mean = float(array.mean())
    return {"mean": mean, "low": max(0.0, mean - half), "high": min(1.0, mean + half)}


def few_shot_curve(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   probe: str = "prototype", ks=DEFAULT_KS, episodes: int = 20, seed: int = 0) -> dict[int, dict]:
    """k -> {auc, accuracy, f1: {mean, low, high}, episodes}. A k larger than either class of the training
    pool is left out; the test set must hold both classes."""
    train_y, test_y = np.asarray(train_y).astype(int), np.asarray(test_y).astype(int)
    if not has_both_classes(test_y):
        raise EvaluationError("the test studies hold only one class of this finding; AUC needs both.")
    probe_fn = PROBES[probe]
    rng = np.random.default_rng(seed)
    largest = min(int((train_y == 0).sum()), int((train_y == 1).sum()))
    curve = {}
    for k in (k for k in ks if k <= largest):
        runs = []
        for _ in range(episodes):
            support = draw_support(train_y, k, rng)
            runs.append(episode_metrics(probe_fn(train_x[support], train_y[support], test_x), test_y))
        curve[k] = {name: mean_interval([r[name] for r in runs]) for name in ("auc", "accuracy", "f1")}
        curve[k]["episodes"] = episodes
    return curve
