"""`cmr-clip prepare`: studies + reports -> a training corpus (`datasets.DatasetDict`)."""

from __future__ import annotations

import argparse
import json
import logging

from ..hub import push_dataset
from ..privacy import PHIError, check_vocabulary, load_identity_hashes
from ..processing import CMRStudyProcessor
from .prepare import prepare, train_wordpiece_tokenizer
from .sharding import check_shard, shard_dir_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--studies", required=True, help="folder holding one folder (or .zip) per study_id")
    parser.add_argument("--reports", required=True, help="JSONL or CSV: study_id, impression or report, [patient_id, split, labels]")
    parser.add_argument("--out", required=True, help="output folder (datasets save_to_disk)")
    parser.add_argument("--layout", default="default", help="'default' or 'reference' (the released model's input)")
    parser.add_argument("--num-frames", type=int, default=16, help="frames per study for the default layout")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-proc", type=int, default=1, help="processes for the DICOM work")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-tokenizer", type=int, metavar="VOCAB_SIZE",
                        help="also learn a WordPiece vocabulary from the training impressions (out/tokenizer)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the corpus to a private Hub dataset repo "
                        "(through the PHI guard, without the study_id column, as `cmr-clip push` does)")
    parser.add_argument("--num-shards", type=int, default=1,
                        help="prepare one of N parts of the studies (one job each), into OUT/shard-I-of-N; "
                             "join them with `cmr-clip prepare-merge`")
    parser.add_argument("--shard-index", type=int, default=0, help="which part, 0..N-1 (e.g. $SLURM_ARRAY_TASK_ID)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.num_shards > 1:
        check_shard(args.num_shards, args.shard_index)
        if args.train_tokenizer or args.push_to_hub:
            raise SystemExit("cmr-clip prepare: with --num-shards, give --train-tokenizer and --push-to-hub to "
                             "`cmr-clip prepare-merge`, which sees every shard.")
        args.out = f"{args.out}/{shard_dir_name(args.shard_index, args.num_shards)}"
    processor = CMRStudyProcessor(layout=args.layout, num_frames=args.num_frames, image_size=args.image_size)
    corpus = prepare(args.studies, args.reports, args.out, processor=processor, num_proc=args.num_proc,
                     val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                     num_shards=args.num_shards, shard_index=args.shard_index)
    status = tokenize_and_push(args.out, corpus, args.train_tokenizer, args.push_to_hub, "cmr-clip prepare")
    if status:
        return status
    with open(f"{args.out}/prepare_report.json") as handle:
        print(json.dumps(json.load(handle), indent=2))
    return 0


def tokenize_and_push(out: str, corpus, vocab_size: int | None, repo_id: str | None, command: str) -> int:
    """The steps after a corpus is written, shared by `prepare` and `prepare-merge`: a WordPiece vocabulary from the
    training impressions, checked against the identities prepare saw, and the guarded push. 1 if the guard refuses."""
    try:
        if vocab_size:
            tokenizer_dir = f"{out}/tokenizer"
            train_wordpiece_tokenizer(corpus["train"]["impression"], tokenizer_dir, vocab_size)
            check_vocabulary(tokenizer_dir, *load_identity_hashes(out), where="tokenizer")
        if repo_id:
            push_dataset(out, repo_id, private=True)  # the guarded route, as `cmr-clip push` takes
    except PHIError as error:
        print(f"{command}: {error}")
        return 1
    return 0
