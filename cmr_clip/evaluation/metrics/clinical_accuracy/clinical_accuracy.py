"""`evaluate` module: finding-level clinical accuracy of generated cardiac MRI impressions.

    import evaluate
    from cmr_clip.evaluation import metric_path
    metric = evaluate.load(metric_path("clinical_accuracy"))
    metric.compute(predictions=generated_impressions, references=reference_impressions)

Findings are read from both texts by the rule-based extractor (`cmr_clip.evaluation.findings`: negation,
LV/RV, grades); a negated or unmentioned finding counts as absent. A thin wrapper over
`cmr_clip.evaluation.report_metrics.clinical_accuracy`.
"""

import datasets
import evaluate

from cmr_clip.evaluation.report_metrics import clinical_accuracy

_DESCRIPTION = ("Per-finding precision, recall and F1 (and micro/macro F1, diagnosis agreement) between the "
                "findings stated in generated and in reference cardiac MRI impressions.")
_KWARGS_DESCRIPTION = """
Args:
    predictions: generated impressions, one string per study.
    references: the reference impression of each study (same order).
Returns:
    finding_<name>_precision, _recall, _f1 (None where neither side states the finding), _support;
    finding_precision_micro, finding_recall_micro, finding_f1_micro, finding_f1_macro, diagnosis_accuracy.
"""


class ClinicalAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return clinical_accuracy(predictions, references)
