"""`cmr-clip train`: train CMR-CLIP (or, with `--task report`, CMR-TARGET) on a prepared corpus with Accelerate.

    cmr-clip train --config train.yaml [--learning-rate 3e-4 --epochs 20 ...]
    accelerate launch -m cmr_clip.training --config train.yaml     # several GPUs or nodes

Every field of `TrainConfig` is a flag; flags override the config file's values.
"""

from __future__ import annotations

import argparse
import json

from ..training import TrainConfig, train
from .base import DONE, UsageError, add_dataclass_arguments, given_fields, log_to_console

# The training library checks its configuration (a config file's keys, a task's required fields) with ValueError.
ERRORS = (ValueError,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig fields; flags override it")
    add_dataclass_arguments(parser, TrainConfig)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = given_fields(TrainConfig, args)
    return TrainConfig.from_file(args.config, **overrides) if args.config else TrainConfig(**overrides)


def run(args: argparse.Namespace) -> int:
    log_to_console()
    config = config_from_args(args)
    if not (config.data_dir or config.streaming):
        raise UsageError("give --data-dir (a corpus made by `cmr-clip prepare`), --streaming with --studies-dir and "
                         "--reports, or a --config that sets them")
    metrics = train(config)
    final = {k: v for k, v in metrics.get("final", {}).items() if isinstance(v, float)}
    print(json.dumps(final, indent=2))
    return DONE
