"""`cmr-clip finetune`: a study classifier from a trained CMR-CLIP model, whole or with LoRA adapters.

    cmr-clip finetune --model DIR --data CORPUS --labels lv_hypertrophy lge --output OUT
    cmr-clip finetune --model DIR --data CORPUS --labels diagnosis --lora --lora-r 8 --lora-targets qkv out_proj
    cmr-clip finetune --model DIR --data CORPUS --labels rv_dysfunction --tower text --lora --output OUT

Labels are keys of the corpus's `labels` JSON: boolean findings (multi-label, one logit each), one string
field such as `diagnosis` (single-label) or one numeric field (regression). `--tower video` (default) trains
a head on the video tower; with `--lora`, LoRA adapters (PEFT) go on the video tower's Linear layers named by
`--lora-targets`: `qkv` and `out_proj` (space and time attention), `fc1` and `fc2` (MLP); default all four.
The head is trained whole and saved with the adapter. `--tower text` is prompt adaptation: the video tower is
frozen and the text tower (whole, or LoRA on `query`, `key`, `value`, `dense` of a BERT tower) learns so that
the prompt set's label prompts score the studies as zero-shot use does. OUT gets the classifier or the
adapter, `metrics.json`, and `checkpoints/` (`--resume latest` continues an interrupted run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..training.tasks.classification import TOWERS, FinetuneConfig, finetune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = FinetuneConfig()
    parser.add_argument("--model", required=True, help="a trained CMR-CLIP directory")
    parser.add_argument("--data", required=True, help="a prepared corpus with a labels column (`cmr-clip prepare`)")
    parser.add_argument("--labels", required=True, nargs="+", help="keys of the labels JSON to learn")
    parser.add_argument("--output", default=defaults.output_dir, help="where the classifier or adapter goes")
    parser.add_argument("--tower", choices=TOWERS, default=defaults.tower,
                        help="video: a head on the video tower; text: prompt adaptation of the text tower")
    parser.add_argument("--prompt-set", default=None,
                        help="--tower text: prompt set file or built-in name (default: the model's own set)")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (and the head), not the whole tower")
    parser.add_argument("--lora-r", type=int, default=defaults.lora_r)
    parser.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha)
    parser.add_argument("--lora-dropout", type=float, default=defaults.lora_dropout)
    parser.add_argument("--lora-targets", nargs="+", default=None,
                        help="Linear layer names (default: video qkv out_proj fc1 fc2; text query key value dense)")
    parser.add_argument("--classifier-hidden-size", type=int, default=0, help="> 0: an MLP head of this width")
    parser.add_argument("--head-init", choices=["fresh", "probe"], default=defaults.head_init,
                        help="probe: fit the head on frozen embeddings first, then fine-tune (LP-FT)")
    parser.add_argument("--balance", choices=["weights", "sampler", "none"], default=defaults.balance,
                        help="class imbalance: loss weights, class-balanced sampling (single-label) or none")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                        help="checkpoint every N steps (0: at the end of each epoch)")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(
        model_dir=args.model, data_dir=args.data, labels=list(args.labels), output_dir=args.output,
        tower=args.tower, prompt_set=args.prompt_set, lora=args.lora,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_targets=list(args.lora_targets) if args.lora_targets else None,
        classifier_hidden_size=args.classifier_hidden_size, head_init=args.head_init,
        balance=args.balance, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, augment=args.augment,
        mixed_precision=args.mixed_precision, checkpoint_every=args.checkpoint_every, resume=args.resume,
        seed=args.seed, progress=args.progress,
    )


def run(args: argparse.Namespace) -> int:
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
