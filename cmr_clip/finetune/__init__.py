"""Fine-tuning CMR-CLIP on study labels: `finetune(FinetuneConfig(...))`, `cmr-clip finetune`, or
`accelerate launch -m cmr_clip.finetune ...`; whole or with LoRA adapters (PEFT), on the video tower (a
classification head) or the text tower (prompt adaptation, `PromptClassifier`)."""

from .loop import (
    TEXT_LORA_TARGETS,
    VIDEO_LORA_TARGETS,
    FinetuneConfig,
    FinetuneError,
    apply_lora,
    finetune,
    load_finetuned,
    trainable_fraction,
)
from .prompt_tuning import PromptClassifier

__all__ = [
    "FinetuneConfig",
    "FinetuneError",
    "PromptClassifier",
    "TEXT_LORA_TARGETS",
    "VIDEO_LORA_TARGETS",
    "apply_lora",
    "finetune",
    "load_finetuned",
    "trainable_fraction",
]
