"""`cmr-clip predict SOURCE --model DIR --output-dir OUT`: zero-shot answers for every study of an archive, as one
table (Parquet and CSV, one row per study), resumable, with DICOM read in worker processes.

    cmr-clip predict exports/ --model cmr-clip-demo --output-dir predictions --num-workers 2
    cmr-clip predict studies.csv --model cmr-clip-demo --output-dir predictions --estimate lvef --save-embeddings
    cmr-clip predict --dicomweb https://pacs/dicom-web --qido StudyDate=20240101-20240331 --model cmr-clip-demo
        --output-dir predictions --store-results --store-montage        # (one line)
    accelerate launch -m cmr_clip predict exports/ --model cmr-clip-demo --output-dir predictions   # one shard per GPU

SOURCE is a folder of study folders or zips, a .csv (a `path` column) or .txt list of study paths, or a prepared
corpus; or, with `--dicomweb URL`, the MR studies on a PACS (`--study UID ...`, or those a QIDO-RS query finds:
`--qido KEYWORD=VALUE`, repeatable; none: every MR study); `--store-results` files each answer with its study
as a DICOM SR (`--store-montage`: and a montage of the frames used), its row's `sr_status` saying how it went.
Run it again into the same --output-dir to resume: studies already answered are skipped. A study that cannot be read gets a row with its reason (exit code 1). Rows
name studies by folder name (or `study N` when the name could name the patient), PACS studies by their study key
(a hash of the UID), never by anything read from the files. `--dtype`/`--quantize`/`--compile` set the precision
the model runs in (one line on stderr says which was picked and why).
"""

from __future__ import annotations

import argparse

from ..pipelines import PromptSetError
from ..pipelines.batch import PredictSettings, predict
from .base import (
    UsageError,
    add_dataclass_arguments,
    add_dicomweb_arguments,
    add_flag,
    add_precision_flags,
    dicomweb_server,
    given_fields,
    outcome,
    precision_kwargs,
    print_precision,
)

ERRORS = (PromptSetError, ValueError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", help="a folder of study folders or zips, a .csv/.txt list of study "
                                                  "paths, or a prepared corpus (or --dicomweb URL)")
    add_dicomweb_arguments(parser)
    parser.add_argument("--study", nargs="+", metavar="UID", help="with --dicomweb: these studies (StudyInstanceUID)")
    parser.add_argument("--qido", action="append", default=[], metavar="KEYWORD=VALUE",
                        help="with --dicomweb: a QIDO-RS filter, e.g. StudyDate=20240101-20240331 or PatientID=X "
                             "(repeatable; MR studies only)")
    parser.add_argument("--model", required=True, help="a CMR-CLIP directory saved with its processor")
    add_flag(parser, "--output-dir", required=True, help="where the table and the journal go (rerun to resume)")
    add_dataclass_arguments(parser, PredictSettings, flags={"estimates": "--estimate", "prompt_set": "--prompts"},
                            skip=("dtype", "quantize", "compile"))
    add_precision_flags(parser)


def run(args: argparse.Namespace) -> int:
    settings = PredictSettings(**{**given_fields(PredictSettings, args), **precision_kwargs(args)})
    result = predict(pacs_source(args) or args.source, args.output_dir, args.model, settings)
    if not result:  # a process other than the first under accelerate launch: process 0 reports
        return 0
    print_precision("predict", result["precision"])
    print(f"{result['done']} studies answered, {result['failed']} failed (reasons in the table), "
          f"{result['resumed']} sources taken from an earlier run; table: {result['table']} and .csv")
    return outcome(result["done"], result["failed"])


def pacs_source(args: argparse.Namespace):
    """The PACS studies `--dicomweb`, `--study` and `--qido` name (None without --dicomweb)."""
    server = dicomweb_server(args)
    if (server is None) == (args.source is None):
        raise UsageError("give a SOURCE or --dicomweb URL (with --study UID ... or --qido filters), not both")
    if args.store_montage and not args.store_results:
        raise UsageError("--store-montage goes with --store-results")
    if server is None:
        if args.study or args.qido or args.store_results:
            raise UsageError("--study, --qido and --store-results go with --dicomweb URL")
        return None
    if args.study and args.qido:
        raise UsageError("give --study UIDs or --qido filters, not both")
    if args.study:
        return [server.study(uid) for uid in args.study]
    return server.query(**qido_filters(args.qido))


def qido_filters(items: list[str]) -> dict[str, str]:
    """`--qido KEYWORD=VALUE` flags as QIDO-RS search filters."""
    filters = {}
    for item in items:
        keyword, _, value = item.partition("=")
        if not keyword or not value:
            raise UsageError(f"--qido {item!r}: expected KEYWORD=VALUE, e.g. StudyDate=20240101-20240331")
        filters[keyword] = value
    return filters
