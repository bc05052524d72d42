"""`cmr-clip prepare`: studies + reports -> a training corpus (`datasets.DatasetDict`)."""

from __future__ import annotations

import argparse
import json
import logging

from ..hub import push_dataset
from ..privacy import PHIError, check_vocabulary, load_identity_hashes
from ..processing import CMRStudyProcessor
from .prepare import prepare, train_wordpiece_tokenizer


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


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    processor = CMRStudyProcessor(layout=args.layout, num_frames=args.num_frames, image_size=args.image_size)
    corpus = prepare(args.studies, args.reports, args.out, processor=processor, num_proc=args.num_proc,
                     val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)
    try:
        if args.train_tokenizer:
            tokenizer_dir = f"{args.out}/tokenizer"
            train_wordpiece_tokenizer(corpus["train"]["impression"], tokenizer_dir, args.train_tokenizer)
            check_vocabulary(tokenizer_dir, *load_identity_hashes(args.out), where="tokenizer")
        if args.push_to_hub:
            push_dataset(args.out, args.push_to_hub, private=True)  # the guarded route, as `cmr-clip push` takes
    except PHIError as error:
        print(f"cmr-clip prepare: {error}")
        return 1
    with open(f"{args.out}/prepare_report.json") as handle:
        print(json.dumps(json.load(handle), indent=2))
    return 0
