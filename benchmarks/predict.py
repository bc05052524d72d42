"""Batch inference speed: `cmr-clip predict` over a folder of studies against the per-study zero-shot CLI.

Writes a synthetic cohort (or takes `--studies-dir`), then times, in the same run and on the same model:

- baseline: `cmr-clip zero-shot STUDY --model M --json F`, one process per study (what a user had before
  `predict`: a shell loop over the archive);
- ours: one `cmr-clip predict FOLDER --model M` process (DICOM read in `--num-workers` DataLoader workers,
  studies scored `--batch-size` at a time).

Both include process start and model loading, as a user meets them. Prints studies/s for both, the ratio, and
the largest difference between the two runs' finding probabilities (they must agree).
Run: `python benchmarks/predict.py --model cmr-clip-demo [--studies 24] [--num-workers 2]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from cmr_clip.synthetic import make_cohort


def cli(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "cmr_clip", *args], check=False, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def per_study_cli(studies: list[Path], model: str, out: Path) -> tuple[float, dict]:
    """Seconds for one `cmr-clip zero-shot` process per study, and study name -> finding -> probability."""
    answers = {}
    start = time.perf_counter()
    for study in studies:
        cli("zero-shot", str(study), "--model", model, "--json", str(out / f"{study.name}.json"))
    seconds = time.perf_counter() - start
    for study in studies:
        answer = json.loads((out / f"{study.name}.json").read_text())[0]
        answers[study.name] = {item["finding"]: item.get("score") for item in answer.get("findings", [])}
    return seconds, answers


def batch_predict(folder: Path, model: str, out: Path, num_workers: int, batch_size: int) -> tuple[float, dict]:
    """Seconds for one `cmr-clip predict` process over the folder, and its probabilities as above."""
    start = time.perf_counter()
    cli("predict", str(folder), "--model", model, "--output-dir", str(out), "--num-workers", str(num_workers),
        "--batch-size", str(batch_size), "--no-progress")
    seconds = time.perf_counter() - start
    table = pd.read_parquet(out / "predictions.parquet").set_index("study")
    columns = [c for c in table.columns if c.endswith("_probability")]
    answers = {study: {c.removesuffix("_probability"): row[c] for c in columns} for study, row in table.iterrows()}
    return seconds, answers


def largest_difference(first: dict, second: dict) -> float:
    return max(abs(first[s][f] - second[s][f]) for s in first for f in first[s] if first[s][f] is not None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a CMR-CLIP directory (e.g. the demo's)")
    parser.add_argument("--studies", type=int, default=24, help="synthetic studies to write")
    parser.add_argument("--studies-dir", help="a folder of study folders to use instead of writing a cohort")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = Path(args.studies_dir) if args.studies_dir else tmp / "cohort" / "studies"
        if not args.studies_dir:
            make_cohort(tmp / "cohort", args.studies, seed=0, progress=False, num_workers=args.num_workers)
        studies = sorted(p for p in folder.iterdir() if p.is_dir())
        (tmp / "cli").mkdir()
        cli_seconds, cli_answers = per_study_cli(studies, args.model, tmp / "cli")
        predict_seconds, predict_answers = batch_predict(folder, args.model, tmp / "predict", args.num_workers,
                                                         args.batch_size)
    n = len(studies)
    result = {"studies": n, "cpus": os.cpu_count(), "cli_studies_per_s": n / cli_seconds,
              "predict_studies_per_s": n / predict_seconds, "ratio": cli_seconds / predict_seconds,
              "largest_probability_difference": largest_difference(cli_answers, predict_answers)}
    print(f"{n} studies, {result['cpus']} CPUs, predict --num-workers {args.num_workers} --batch-size {args.batch_size}")
    print(f"per-study zero-shot CLI  {result['cli_studies_per_s']:.3f} studies/s  ({cli_seconds:.1f} s)")
    print(f"cmr-clip predict         {result['predict_studies_per_s']:.3f} studies/s  ({predict_seconds:.1f} s)")
    print(f"ratio predict / per-study CLI  {result['ratio']:.2f}x")
    print(f"largest difference between their finding probabilities  {result['largest_probability_difference']:.2e}")
    return result


if __name__ == "__main__":
    main()
