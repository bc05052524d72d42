"""`evaluate` module: text and clinical metrics of generated cardiac MRI reports against reference impressions.

    import evaluate
    from cmr_clip.evaluation import metric_path
    metric = evaluate.load(metric_path("report_generation"))
    metric.compute(predictions=generated_impressions, references=reference_impressions)

A thin wrapper over `cmr_clip.evaluation.report_metrics.report_generation_metrics` (BLEU-1..4, ROUGE-L,
METEOR with exact and stem matching, per-finding precision/recall/F1); needs the `report` extra.
"""

import datasets
import evaluate

from cmr_clip.evaluation.report_metrics import report_generation_metrics

_DESCRIPTION = ("Corpus BLEU-1..4, ROUGE-L, METEOR (exact + stem matching, no WordNet) and finding-level "
                "clinical accuracy of generated impressions against reference impressions.")
_CITATION = """\
@inproceedings{papineni2002bleu, title={BLEU: a Method for Automatic Evaluation of Machine Translation}, year={2002}}
@inproceedings{lin2004rouge, title={ROUGE: A Package for Automatic Evaluation of Summaries}, year={2004}}
@inproceedings{banerjee2005meteor, title={METEOR: An Automatic Metric for MT Evaluation}, year={2005}}
"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: generated impressions, one string per study.
    references: the reference impression of each study (same order).
Returns:
    bleu1..bleu4, rougeL, meteor_exact_stem (in [0, 1]); finding_<name>_precision/_recall/_f1/_support,
    finding_precision_micro, finding_recall_micro, finding_f1_micro, finding_f1_macro, diagnosis_accuracy
    (None where undefined); n_reports.
"""


class ReportGeneration(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return report_generation_metrics(predictions, references)
