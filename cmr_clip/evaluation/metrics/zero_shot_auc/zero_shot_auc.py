"""`evaluate` module: ROC AUC of zero-shot finding scores, with a bootstrap 95% interval.

    import evaluate
    from cmr_clip.evaluation import metric_path
    auc = evaluate.load(metric_path("zero_shot_auc"))
    auc.compute(predictions=scores, references=labels)   # {"auc", "auc_low", "auc_high", "n"}

A thin wrapper over `cmr_clip.evaluation.classification.auc` and `cmr_clip.evaluation.intervals.with_interval`.
"""

import datasets
import evaluate
import numpy as np

from cmr_clip.evaluation.classification import auc
from cmr_clip.evaluation.intervals import with_interval

_DESCRIPTION = "ROC AUC of per-study scores for one binary finding, with a percentile-bootstrap 95% interval."
_KWARGS_DESCRIPTION = """
Args:
    predictions: a score per study (higher: finding more likely).
    references: 1 where the finding is present, 0 where absent.
    resamples: bootstrap resamples (default 1000); seed: their seed (default 0).
Returns:
    auc, auc_low, auc_high (None when undefined), n.
"""


class ZeroShotAUC(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, resamples=1000, seed=0):
        scores, labels = np.asarray(predictions, dtype=float), np.asarray(references, dtype=int)
        figure = with_interval(auc, scores, labels, resamples=resamples, seed=seed)
        return {"auc": figure["value"], "auc_low": figure["low"], "auc_high": figure["high"], "n": len(labels)}
