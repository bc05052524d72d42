"""Fine-tuning CMR-CLIP on study labels: `finetune(FinetuneConfig(...))`, `cmr-clip finetune`, or
`accelerate launch -m cmr_clip.finetune ...`; whole or with LoRA adapters (PEFT)."""

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

__all__ = [
    "FinetuneConfig",
    "FinetuneError",
    "TEXT_LORA_TARGETS",
    "VIDEO_LORA_TARGETS",
    "apply_lora",
    "finetune",
    "load_finetuned",
    "trainable_fraction",
]
