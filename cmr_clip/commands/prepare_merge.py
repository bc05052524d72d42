"""`cmr-clip prepare-merge --shards DIR --output-dir DIR`: join the shards of `cmr-clip prepare --num-shards N
--shard-index I` into one corpus (see `cmr_clip.data.sharding`)."""

from __future__ import annotations

import argparse

from ..data.sharding import ShardsError, merge_shards
from .base import add_flag, log_to_console
from .prepare import add_corpus_arguments, finish_corpus

ERRORS = (ShardsError,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="the --output-dir folder the shards were prepared into")
    add_flag(parser, "--output-dir", required=True, help="output folder for the merged corpus")
    add_corpus_arguments(parser)


def run(args: argparse.Namespace) -> int:
    log_to_console()
    corpus = merge_shards(args.shards, args.output_dir)
    return finish_corpus("prepare-merge", args, args.output_dir, corpus)
