"""`cmr-clip prepare --studies DIR --reports FILE --output-dir DIR`: studies + reports -> a training corpus
(`datasets.DatasetDict`, saved with `save_to_disk`). `--dicomweb URL` instead of `--studies` reads the studies
from a PACS, each named in the reports by `study_instance_uid` or `accession_number`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.prepare import ReportsError, prepare, train_wordpiece_tokenizer
from ..data.sharding import check_shard, shard_dir_name
from ..hub import push_dataset
from ..privacy import PHIError, check_vocabulary, load_identity_hashes
from ..processing import CMRStudyProcessor, StudyLayout
from ..processing.layout import CINE_PHASES
from ..processing.pixels import zoom_sizes
from .base import (
    FIELD_OF_VIEW_METAVAR,
    SOME_FAILED,
    UsageError,
    add_dicomweb_arguments,
    add_flag,
    dicomweb_server,
    log_to_console,
    outcome,
    parse_field_of_view,
    print_error,
)

ERRORS = (ReportsError,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--studies", help="folder holding one folder (or .zip) per study_id")
    add_dicomweb_arguments(parser, source)
    parser.add_argument("--reports", required=True, help="JSONL or CSV: study_id, impression or report, [patient_id, "
                        "split, labels]; with --dicomweb, study_instance_uid or accession_number names each study")
    add_flag(parser, "--output-dir", required=True, help="output folder (datasets save_to_disk)")
    parser.add_argument("--layout", default="default", help="'default' or 'reference' (the released model's input)")
    parser.add_argument("--num-frames", type=int, default=16, help="frames per study for the default layout")
    parser.add_argument("--cine-phases", choices=CINE_PHASES, default="all",
                        help="the default layout's cine frames: 'all', the middles of equal shares of the cycle, or "
                             "'cycle', end-diastole and equal shares of the cycle after it (the demo's)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--zoom", type=float, default=1.0,
                        help="keep the middle 1/ZOOM of each image's short side (cardiac planes are centred on the "
                             "heart; the demo uses 1.25); 1 keeps the whole field of view")
    parser.add_argument("--field-of-view", metavar=FIELD_OF_VIEW_METAVAR,
                        help="crop by size in millimetres (from each image's PixelSpacing) instead of --zoom: one "
                             "field for every view (160), or one per view ('sax=150,2ch=220,3ch=220,4ch=220'); views "
                             "left out, and images without a spacing, use --zoom")
    parser.add_argument("--num-proc", type=int, default=1, help="processes for the DICOM work")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    add_corpus_arguments(parser)
    parser.add_argument("--num-shards", type=int, default=1,
                        help="prepare one of N parts of the studies (one job each), into OUTPUT_DIR/shard-I-of-N; "
                             "join them with `cmr-clip prepare-merge`")
    parser.add_argument("--shard-index", type=int, default=0, help="which part, 0..N-1 (e.g. $SLURM_ARRAY_TASK_ID)")


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """The steps after a corpus is written, shared by `prepare` and `prepare-merge`."""
    parser.add_argument("--train-tokenizer", type=int, metavar="VOCAB_SIZE",
                        help="also learn a WordPiece vocabulary from the training impressions (OUTPUT_DIR/tokenizer)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the corpus to a private Hub dataset repo "
                        "(through the PHI guard, without the study_id column, as `cmr-clip push` does)")


def run(args: argparse.Namespace) -> int:
    log_to_console()
    output_dir = args.output_dir
    if args.num_shards > 1:
        _check_shard_flags(args.num_shards, args.shard_index)
        if args.train_tokenizer or args.push_to_hub:
            raise UsageError("with --num-shards, give --train-tokenizer and --push-to-hub to `cmr-clip prepare-merge`, "
                             "which sees every shard.")
        output_dir = f"{output_dir}/{shard_dir_name(args.shard_index, args.num_shards)}"
    try:
        crop = zoom_sizes(args.image_size, args.zoom)
    except ValueError as error:
        raise UsageError(f"--zoom: {error}") from None
    layout = args.layout
    if args.cine_phases != "all":
        if args.layout != "default":
            raise UsageError(f"--cine-phases places the default layout's cine frames; --layout {args.layout} has its own.")
        layout = StudyLayout.default(args.num_frames, cine_phases=args.cine_phases)
    processor = CMRStudyProcessor(layout=layout, num_frames=args.num_frames, image_size=args.image_size,
                                  field_of_view_mm=parse_field_of_view(args.field_of_view), **crop)
    corpus = prepare(dicomweb_server(args) or args.studies, args.reports, output_dir, processor=processor, num_proc=args.num_proc,
                     val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                     num_shards=args.num_shards, shard_index=args.shard_index)
    return finish_corpus("prepare", args, output_dir, corpus)


def _check_shard_flags(num_shards: int, shard_index: int) -> None:
    try:
        check_shard(num_shards, shard_index)
    except ValueError as error:  # the library's check of its arguments; here, of two flags
        raise UsageError(str(error)) from error


def finish_corpus(command: str, args: argparse.Namespace, output_dir: str, corpus) -> int:
    """The WordPiece vocabulary from the training impressions (checked against the identities prepare saw), the
    guarded push, and the corpus's report on stdout. Exit 1 when studies were skipped or the guard refused the
    tokenizer or the upload (the corpus is written either way), 2 when no study could be prepared."""
    try:
        if args.train_tokenizer:
            tokenizer_dir = f"{output_dir}/tokenizer"
            train_wordpiece_tokenizer(corpus["train"]["impression"], tokenizer_dir, args.train_tokenizer)
            check_vocabulary(tokenizer_dir, *load_identity_hashes(output_dir), where="tokenizer")
        if args.push_to_hub:
            push_dataset(output_dir, args.push_to_hub, private=True)  # the guarded route, as `cmr-clip push` takes
    except PHIError as error:
        print_error(command, error)
        return SOME_FAILED
    report = json.loads((Path(output_dir) / "prepare_report.json").read_text())
    print(json.dumps(report, indent=2))
    return outcome(report["prepared"], report["skipped"])
