"""`cmr-clip push DIR --repo-id ORG/NAME [--private]`: publish a saved model (or a prepared corpus) to the Hub.

A model directory is staged with its weights, configs, processor, prompt set, a generated model card and
the package's own code for `trust_remote_code=True` loading; a prepared corpus (`cmr-clip prepare`) is
pushed as a dataset. Both go through the PHI guard first and are refused (exit 2, nothing uploaded), with
the offending file and field, if anything looks like a patient identifier. `--dry-run DIR` writes what would
be uploaded to DIR (through the same staging function as the real push, guard included) and uploads nothing.
`--space` publishes the study web page (`cmr-clip app`) instead, as a Gradio Space holding the model and, when
given, `--index` and `--report-model` (see `cmr_clip.hub.space`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..hub import (DROPPED_DATASET_COLUMNS, HubPublishError, push, push_dataset, push_space, stage, stage_dataset,
                   stage_space)
from ..index import StudyIndexError
from ..privacy import PHIError
from .base import DONE, UsageError, add_flag

ERRORS = (PHIError, HubPublishError, StudyIndexError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="a saved model directory, or a prepared corpus to push as a dataset")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    add_flag(parser, "--data-dir", default=None, help="the prepared corpus the model was trained on, summarised in "
             "the card (counts, vendors, field strengths; default: DIR/corpus when present)")
    parser.add_argument("--license", default=None, help="license field of the model card (default: the licence the "
                        "source states for a converted release, else apache-2.0)")
    parser.add_argument("--dataset", action="append", default=None, dest="datasets",
                        help="Hub dataset id the model was trained on (repeatable), for the card's metadata")
    parser.add_argument("--no-remote-code", action="store_true", help="do not ship the package's code with the model")
    parser.add_argument("--keep-study-ids", action="store_true",
                        help="datasets: keep the study_id column (dropped by default: export folder names are often "
                             "accession numbers)")
    parser.add_argument("--space", action="store_true",
                        help="publish the study web page (cmr-clip app) with this model as a Gradio Space at --repo-id")
    parser.add_argument("--index", help="--space: a study index built with the model, for the page's nearest cases")
    parser.add_argument("--report-model", help="--space: a CMR-TARGET directory, for the page's draft impression")
    parser.add_argument("--requirement", help="--space: the pip line that installs cmr-clip in the Space (default: "
                        "cmr-clip[app]==this version; a git+https URL where it is not on PyPI)")
    parser.add_argument("--dry-run", metavar="DIR", default=None,
                        help="write what would be uploaded to DIR (the same staging as the real push) and upload nothing")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if args.space:
        return _push_space(directory, args)
    if args.index or args.report_model or args.requirement:
        raise UsageError("--index, --report-model and --requirement go with --space (they publish the study web page).")
    if (directory / "dataset_dict.json").is_file():
        return _push_corpus(directory, args)
    options = dict(data_dir=args.data_dir, license=args.license, datasets=args.datasets)
    if args.dry_run:
        files = stage(directory, args.dry_run, remote_code=not args.no_remote_code, repo_id=args.repo_id, **options)
        print(f"would upload to {args.repo_id}: {', '.join(files)} (staged in the --dry-run folder)")
        return DONE
    commit = push(directory, args.repo_id, private=args.private, remote_code=not args.no_remote_code, **options)
    print(f"pushed the model to {args.repo_id}{' (private)' if args.private else ''}: {getattr(commit, 'commit_url', commit)}")
    return DONE


def _push_corpus(directory: Path, args: argparse.Namespace) -> int:
    drop = () if args.keep_study_ids else DROPPED_DATASET_COLUMNS
    if args.dry_run:
        staged = stage_dataset(directory, drop, f"dataset {args.repo_id}")
        staged.save_to_disk(args.dry_run)
        print(f"would upload to {args.repo_id}: splits {', '.join(staged)} with columns "
              f"{', '.join(next(iter(staged.values())).column_names)} (staged in the --dry-run folder)")
        return DONE
    push_dataset(directory, args.repo_id, private=args.private, drop_columns=drop)
    print(f"pushed the dataset to {args.repo_id}{' (private)' if args.private else ''}")
    return DONE


def _push_space(directory: Path, args: argparse.Namespace) -> int:
    options = dict(index_dir=args.index, report_dir=args.report_model, requirement=args.requirement,
                   license=args.license, data_dir=args.data_dir, datasets=args.datasets)
    if args.dry_run:
        files = stage_space(directory, args.dry_run, repo_id=args.repo_id, **options)
        print(f"would upload to the Space {args.repo_id}: {', '.join(files)} (staged in the --dry-run folder)")
        return DONE
    commit = push_space(directory, args.repo_id, private=args.private, **options)
    print(f"pushed the study page to the Space {args.repo_id}{' (private)' if args.private else ''}: "
          f"{getattr(commit, 'commit_url', commit)}")
    return DONE
