"""Evaluation of CMR-CLIP: retrieval, zero-shot and few-shot metrics, robustness, and `evaluate` modules.

The `evaluate` modules ship inside the package and load offline by path:
`evaluate.load(metric_path("retrieval_recall"))`, `evaluate.load(metric_path("zero_shot_auc"))`.
"""

from pathlib import Path

from .retrieval import retrieval_metrics

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def metric_path(name: str) -> str:
    """Local path of a bundled `evaluate` module, for `evaluate.load`."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise FileNotFoundError(f"no bundled metric {name!r}; available: {available}")
    return str(path)


__all__ = ["metric_path", "retrieval_metrics"]
