"""Training with Accelerate, one loop and its tasks: CMR-CLIP and CMR-TARGET with `train(TrainConfig(...))`,
`cmr-clip train`, or `accelerate launch -m cmr_clip.training --config FILE`; study classifiers with
`finetune(FinetuneConfig(...))` or `cmr-clip finetune`, whole or with LoRA adapters (PEFT), on the video
tower (a classification head) or the text tower (prompt adaptation, `PromptClassifier`)."""

from .config import RunConfig, TrainConfig, TrainingSchedule
from .losses import gathered_contrastive_loss
from .tasks import train
from .tasks.classification import (
    TEXT_LORA_TARGETS,
    VIDEO_LORA_TARGETS,
    FinetuneConfig,
    FinetuneError,
    apply_lora,
    finetune,
    load_finetuned,
    trainable_fraction,
)
from .tasks.prompt_tuning import PromptClassifier

__all__ = [
    "FinetuneConfig",
    "FinetuneError",
    "PromptClassifier",
    "RunConfig",
    "TEXT_LORA_TARGETS",
    "TrainConfig",
    "TrainingSchedule",
    "VIDEO_LORA_TARGETS",
    "apply_lora",
    "finetune",
    "gathered_contrastive_loss",
    "load_finetuned",
    "train",
    "trainable_fraction",
]
