"""`cmr-clip prepare-merge`: join the shards of `cmr-clip prepare --num-shards N --shard-index I` into one
corpus (see `cmr_clip.data.sharding`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli import tokenize_and_push
from .sharding import ShardsError, merge_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="the --out folder the shards were prepared into")
    parser.add_argument("--out", required=True, help="output folder for the merged corpus")
    parser.add_argument("--train-tokenizer", type=int, metavar="VOCAB_SIZE",
                        help="also learn a WordPiece vocabulary from the merged training impressions (out/tokenizer)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the merged corpus to a private Hub dataset repo "
                        "(through the PHI guard, without the study_id column, as `cmr-clip push` does)")


def run(args: argparse.Namespace) -> int:
    """`cmr-clip prepare-merge`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        corpus = merge_shards(args.shards, args.out)
    except ShardsError as err:
        print(f"cmr-clip prepare-merge: {err}", file=sys.stderr)
        return 2
    status = tokenize_and_push(args.out, corpus, args.train_tokenizer, args.push_to_hub, "cmr-clip prepare-merge")
    if status:
        return status
    print((Path(args.out) / "prepare_report.json").read_text())
    return 0
