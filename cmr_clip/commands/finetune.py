"""`cmr-clip finetune`: a study classifier from a trained CMR-CLIP model, whole or with LoRA adapters.

    cmr-clip finetune --model DIR --data-dir CORPUS --labels lv_hypertrophy lge --output-dir OUT
    cmr-clip finetune --model DIR --data-dir CORPUS --labels diagnosis --lora --lora-r 8 --lora-targets qkv out_proj
    cmr-clip finetune --model DIR --data-dir CORPUS --labels rv_dysfunction --tower text --lora --output-dir OUT

Labels are keys of the corpus's `labels` JSON: boolean findings (multi-label, one logit each), one string
field such as `diagnosis` (single-label) or one numeric field (regression). `--tower video` (default) trains
a head on the video tower; with `--lora`, LoRA adapters (PEFT) go on the video tower's Linear layers named by
`--lora-targets`: `qkv` and `out_proj` (space and time attention), `fc1` and `fc2` (MLP); default all four.
The head is trained whole and saved with the adapter. `--tower text` is prompt adaptation: the video tower is
frozen and the text tower (whole, or LoRA on `query`, `key`, `value`, `dense` of a BERT tower) learns so that
the prompt set's label prompts score the studies as zero-shot use does. OUTPUT_DIR gets the classifier or the
adapter, `metrics.json`, and `checkpoints/` (`--resume latest` continues an interrupted run).
Every field of `FinetuneConfig` is a flag.
"""

from __future__ import annotations

import argparse
import json

from ..precision import MIXED_PRECISION_CHOICES
from ..training.tasks.classification import TOWERS, FinetuneConfig, FinetuneError, finetune
from ..training.tasks.prompt_tuning import PromptAdaptationError
from .base import DONE, add_dataclass_arguments, given_fields, log_to_console

ERRORS = (FinetuneError, PromptAdaptationError)

# Values the library checks late (after loading the model); argparse can refuse them at once.
CHOICES = {"tower": TOWERS, "head_init": ("fresh", "probe"), "balance": ("weights", "sampler", "none"),
           "mixed_precision": MIXED_PRECISION_CHOICES}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, FinetuneConfig, flags={"model_dir": "--model"},
                            required=("model_dir", "data_dir", "labels"), choices=CHOICES)


def run(args: argparse.Namespace) -> int:
    log_to_console()
    metrics = finetune(FinetuneConfig(**given_fields(FinetuneConfig, args)))
    split = "test" if "test" in metrics["evaluation"] else "validation"
    print(f"trainable parameters: {metrics['trainable_parameters']} of {metrics['total_parameters']} "
          f"({100 * metrics['trainable_parameters'] / metrics['total_parameters']:.2f}%)")
    print(json.dumps({split: metrics["evaluation"][split]}, indent=2))
    return DONE
