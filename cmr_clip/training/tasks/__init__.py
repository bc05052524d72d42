"""The tasks of the training loop: `contrastive` (CMR-CLIP), `report` (CMR-TARGET), `classification`
(fine-tuning on study labels); `train(TrainConfig)` runs the first two, `finetune(FinetuneConfig)` the third."""

from ..config import TrainConfig
from ..loop import run
from .contrastive import ContrastiveTask
from .report import ReportTask

TASKS = {"contrastive": ContrastiveTask, "report": ReportTask}


def train(config: TrainConfig) -> dict:
    """Train on a prepared corpus (CMR-CLIP with `task="contrastive"`, CMR-TARGET with `task="report"`);
    returns the metrics also written to `output_dir/metrics.json`."""
    if config.task not in TASKS:
        raise ValueError(f"Unknown task {config.task!r}: use 'contrastive' (CMR-CLIP) or 'report' (CMR-TARGET).")
    return run(TASKS[config.task](config))
