"""`cmr-clip predict SOURCE --model DIR --output-dir OUT`: zero-shot answers for every study of an archive, as one
table (Parquet and CSV, one row per study), resumable, with DICOM read in worker processes.

    cmr-clip predict exports/ --model cmr-clip-demo --output-dir predictions --num-workers 2
    cmr-clip predict studies.csv --model cmr-clip-demo --output-dir predictions --estimate lvef --save-embeddings
    accelerate launch -m cmr_clip predict exports/ --model cmr-clip-demo --output-dir predictions   # one shard per GPU

SOURCE is a folder of study folders or zips, a .csv (a `path` column) or .txt list of study paths, or a prepared
corpus. Run it again into the same --output-dir to resume: studies already answered are skipped. A study that
cannot be read gets a row with its reason (exit code 1). Rows name studies by folder name (or `study N` when the
name could name the patient), never by anything read from the files.
"""

from __future__ import annotations

import argparse

from ..pipelines import PromptSetError
from ..pipelines.batch import DTYPES, PredictSettings, predict
from .base import add_dataclass_arguments, add_flag, given_fields, outcome

ERRORS = (PromptSetError, ValueError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a folder of study folders or zips, a .csv/.txt list of study paths, or a "
                                       "prepared corpus")
    parser.add_argument("--model", required=True, help="a CMR-CLIP directory saved with its processor")
    add_flag(parser, "--output-dir", required=True, help="where the table and the journal go (rerun to resume)")
    add_dataclass_arguments(parser, PredictSettings, flags={"estimates": "--estimate", "prompt_set": "--prompts"},
                            choices={"dtype": tuple(DTYPES)})


def run(args: argparse.Namespace) -> int:
    settings = PredictSettings(**given_fields(PredictSettings, args))
    result = predict(args.source, args.output_dir, args.model, settings)
    if not result:  # a process other than the first under accelerate launch: process 0 reports
        return 0
    print(f"{result['done']} studies answered, {result['failed']} failed (reasons in the table), "
          f"{result['resumed']} sources taken from an earlier run; table: {result['table']} and .csv")
    return outcome(result["done"], result["failed"])
