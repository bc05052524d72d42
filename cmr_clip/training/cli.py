"""`cmr-clip train`: train CMR-CLIP on a prepared corpus with Accelerate.

    cmr-clip train --config train.yaml [--learning-rate 3e-4 --epochs 20 ...]
    accelerate launch -m cmr_clip.training --config train.yaml     # several GPUs or nodes
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .config import add_config_arguments, config_from_args
from .tasks import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig fields; flags override it")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = config_from_args(args)
    if not (config.data_dir or config.streaming):
        raise SystemExit("cmr-clip train: give --data-dir (a corpus made by `cmr-clip prepare`), --streaming with --studies-dir and --reports, or a --config that sets them")
    metrics = train(config)
    final = {k: v for k, v in metrics.get("final", {}).items() if isinstance(v, float)}
    print(json.dumps(final, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmr-clip train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))
