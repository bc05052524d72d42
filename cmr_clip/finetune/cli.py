"""`cmr-clip finetune`: a study classifier from a trained CMR-CLIP model, whole or with LoRA adapters.

    cmr-clip finetune --model DIR --data CORPUS --labels lv_hypertrophy lge --output OUT
    cmr-clip finetune --model DIR --data CORPUS --labels diagnosis --lora --lora-r 8 --lora-targets qkv out_proj

Labels are keys of the corpus's `labels` JSON: boolean findings (multi-label, one logit each), one string
field such as `diagnosis` (single-label) or one numeric field (regression). With `--lora`, LoRA adapters
(PEFT) go on the video tower's Linear layers named by `--lora-targets`: `qkv` and `out_proj` (space and time
attention), `fc1` and `fc2` (MLP); default all four. The head is trained whole and saved with the adapter.
(A BERT text tower's layers are `query`, `key`, `value`, `dense`: see `cmr_clip.finetune.TEXT_LORA_TARGETS`
for prompt adaptation in Python.) OUT gets the classifier or the adapter, and `metrics.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .loop import VIDEO_LORA_TARGETS, FinetuneConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = FinetuneConfig()
    parser.add_argument("--model", required=True, help="a trained CMR-CLIP directory")
    parser.add_argument("--data", required=True, help="a prepared corpus with a labels column (`cmr-clip prepare`)")
    parser.add_argument("--labels", required=True, nargs="+", help="keys of the labels JSON to learn")
    parser.add_argument("--output", default=defaults.output_dir, help="where the classifier or adapter goes")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters and the head, not the whole tower")
    parser.add_argument("--lora-r", type=int, default=defaults.lora_r)
    parser.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha)
    parser.add_argument("--lora-dropout", type=float, default=defaults.lora_dropout)
    parser.add_argument("--lora-targets", nargs="+", default=list(VIDEO_LORA_TARGETS),
                        help="Linear layer names: qkv out_proj fc1 fc2 (default: all)")
    parser.add_argument("--classifier-hidden-size", type=int, default=0, help="> 0: an MLP head of this width")
    parser.add_argument("--balance", choices=["weights", "sampler", "none"], default=defaults.balance,
                        help="class imbalance: loss weights, class-balanced sampling (single-label) or none")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(
        model_dir=args.model, data_dir=args.data, labels=list(args.labels), output_dir=args.output, lora=args.lora,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_targets=list(args.lora_targets), classifier_hidden_size=args.classifier_hidden_size,
        balance=args.balance, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, augment=args.augment,
        mixed_precision=args.mixed_precision, seed=args.seed, progress=args.progress,
    )


def run(args: argparse.Namespace) -> int:
    from .loop import finetune

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metrics = finetune(config_from_args(args))
    split = "test" if "test" in metrics["evaluation"] else "validation"
    print(f"trainable parameters: {metrics['trainable_parameters']} of {metrics['total_parameters']} "
          f"({100 * metrics['trainable_parameters'] / metrics['total_parameters']:.2f}%)")
    print(json.dumps({split: metrics["evaluation"][split]}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmr-clip finetune", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))
