"""`cmr-clip push DIR --repo-id ORG/NAME [--private]`: publish a saved model (or a prepared corpus) to the Hub.

A model directory is staged with its weights, configs, processor, prompt set, a generated model card and
the package's own code for `trust_remote_code=True` loading; a prepared corpus (`cmr-clip prepare`) is
pushed as a dataset. Both go through the PHI guard first and are refused, with the offending file and
field, if anything looks like a patient identifier. `--dry-run OUT` writes what would be uploaded to OUT
(through the same staging function as the real push, guard included) and uploads nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .hub import DROPPED_DATASET_COLUMNS, push, push_dataset, stage, stage_dataset
from .privacy import PHIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="a saved model directory, or a prepared corpus to push as a dataset")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--data", default=None, help="the prepared corpus the model was trained on, summarised in "
                        "the card (counts, vendors, field strengths; default: DIR/corpus when present)")
    parser.add_argument("--license", default=None, help="license field of the model card (default: the licence the "
                        "source states for a converted release, else apache-2.0)")
    parser.add_argument("--dataset", action="append", default=None, dest="datasets",
                        help="Hub dataset id the model was trained on (repeatable), for the card's metadata")
    parser.add_argument("--no-remote-code", action="store_true", help="do not ship the package's code with the model")
    parser.add_argument("--keep-study-ids", action="store_true",
                        help="datasets: keep the study_id column (dropped by default: export folder names are often "
                             "accession numbers)")
    parser.add_argument("--dry-run", metavar="OUT", default=None,
                        help="write what would be uploaded to OUT (the same staging as the real push) and upload nothing")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    try:
        if (directory / "dataset_dict.json").is_file():
            drop = () if args.keep_study_ids else DROPPED_DATASET_COLUMNS
            if args.dry_run:
                staged = stage_dataset(directory, drop, f"dataset {args.repo_id}")
                staged.save_to_disk(args.dry_run)
                print(f"would upload to {args.repo_id}: splits {', '.join(staged)} with columns "
                      f"{', '.join(next(iter(staged.values())).column_names)} (staged in the --dry-run folder)")
                return 0
            push_dataset(directory, args.repo_id, private=args.private, drop_columns=drop)
            print(f"pushed the dataset to {args.repo_id}{' (private)' if args.private else ''}")
            return 0
        options = dict(data_dir=args.data, license=args.license, datasets=args.datasets)
        if args.dry_run:
            files = stage(directory, args.dry_run, remote_code=not args.no_remote_code, repo_id=args.repo_id, **options)
            print(f"would upload to {args.repo_id}: {', '.join(files)} (staged in the --dry-run folder)")
            return 0
        commit = push(directory, args.repo_id, private=args.private, remote_code=not args.no_remote_code, **options)
    except PHIError as error:
        print(f"cmr-clip push: {error}")
        return 1
    print(f"pushed the model to {args.repo_id}{' (private)' if args.private else ''}: {getattr(commit, 'commit_url', commit)}")
    return 0
