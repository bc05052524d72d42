"""`evaluate` module: Recall@K and median rank of cross-modal retrieval between paired embeddings.

    import evaluate
    from cmr_clip.evaluation import metric_path
    recall = evaluate.load(metric_path("retrieval_recall"))
    recall.compute(predictions=text_embeddings, references=study_embeddings, ks=[1, 5, 10])

Row i of `predictions` (query embeddings, e.g. impressions) is paired with row i of `references`
(e.g. studies). A thin wrapper over `cmr_clip.evaluation.retrieval.retrieval_metrics`.
"""

import datasets
import evaluate
import torch

from cmr_clip.evaluation.retrieval import retrieval_metrics

_DESCRIPTION = "Recall@K and median rank, both directions, for paired query and target embeddings (CMR-CLIP)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: query embeddings, one list of floats per pair.
    references: target embeddings, one list of floats per pair (same order).
    ks: the K values (default 1, 5, 10).
Returns:
    text_to_study_R@K, study_to_text_R@K (in [0, 1]), *_median_rank, chance_R@K, n.
"""


class RetrievalRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")),
                                        "references": datasets.Sequence(datasets.Value("float32"))}),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)):
        return retrieval_metrics(torch.tensor(predictions), torch.tensor(references), ks=tuple(ks))
