"""Evaluation of CMR-CLIP: retrieval, zero-shot, few-shot and report metrics, robustness, and `evaluate` modules.

Metric functions take numpy arrays and give floats or dicts, each written once: `classification` (AUC where
both classes are present, thresholds, a fine-tuned classifier's figures), `regression` (MAE, Pearson r),
`retrieval` (ranks, Recall@K, median rank), `report_metrics` (generated text); `intervals.with_interval`
gives any of them a bootstrap 95% interval. `report.evaluate_model` (`cmr-clip evaluate`) and
`report.evaluate_held_out` (the demo) take their zero-shot figures from one pass, `zero_shot.run_zero_shot`.

The `evaluate` modules ship inside the package and load offline by path:
`evaluate.load(metric_path("retrieval_recall"))`, `evaluate.load(metric_path("zero_shot_auc"))`,
`evaluate.load(metric_path("report_generation"))`, `evaluate.load(metric_path("clinical_accuracy"))`.
"""

from pathlib import Path

from .errors import EvaluationError
from .findings import FindingMention, extract_diagnosis, extract_findings, findings_present
from .intervals import with_interval
from .report_metrics import bleu, clinical_accuracy, meteor_exact_stem, report_generation_metrics, rouge_l
from .retrieval import retrieval_metrics

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def metric_path(name: str) -> str:
    """Local path of a bundled `evaluate` module, for `evaluate.load`."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise FileNotFoundError(f"no bundled metric {name!r}; available: {available}")
    return str(path)


__all__ = [
    "EvaluationError",
    "FindingMention",
    "bleu",
    "clinical_accuracy",
    "extract_diagnosis",
    "extract_findings",
    "findings_present",
    "meteor_exact_stem",
    "metric_path",
    "report_generation_metrics",
    "retrieval_metrics",
    "rouge_l",
    "with_interval",
]
