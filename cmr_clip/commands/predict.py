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
from .base import add_flag, outcome

ERRORS = (PromptSetError, ValueError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a folder of study folders or zips, a .csv/.txt list of study paths, or a "
                                       "prepared corpus")
    parser.add_argument("--model", required=True, help="a CMR-CLIP directory saved with its processor")
    add_flag(parser, "--output-dir", required=True, help="where the table and the journal go (rerun to resume)")
    parser.add_argument("--findings", nargs="+", help="findings to judge (default: every finding of the prompt set)")
    parser.add_argument("--estimate", nargs="+", default=[], help="quantities to estimate, e.g. lvef")
    parser.add_argument("--prompts", help="prompt set JSON (default: the model's zero_shot_prompts.json or built-in)")
    parser.add_argument("--score-unassessable", action="store_true",
                        help="also give probabilities for findings the study lacks the views for")
    parser.add_argument("--no-expand-studies", dest="expand_studies", action="store_false",
                        help="a source holding several studies is an error row instead of one row per study")
    parser.add_argument("--split", help="with a prepared corpus: only this split (default: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="studies per model call")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes reading DICOM")
    parser.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: Accelerate's device for this process)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="model weights' dtype")
    parser.add_argument("--save-embeddings", action="store_true",
                        help="also write embeddings.safetensors (row key -> study embedding)")
    parser.add_argument("--report-model", help="a CMR-TARGET directory: add each study's draft impression")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    settings = PredictSettings(findings=args.findings, estimates=args.estimate, prompt_set=args.prompts,
                               score_unassessable=args.score_unassessable, expand_studies=args.expand_studies,
                               batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
                               dtype=args.dtype, save_embeddings=args.save_embeddings, report_model=args.report_model,
                               split=args.split, progress=args.progress)
    result = predict(args.source, args.output_dir, args.model, settings)
    if not result:  # a process other than the first under accelerate launch: process 0 reports
        return 0
    print(f"{result['done']} studies answered, {result['failed']} failed (reasons in the table), "
          f"{result['resumed']} sources taken from an earlier run; table: {result['table']} and .csv")
    return outcome(result["done"], result["failed"])
