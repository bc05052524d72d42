"""How long the synthetic cohort takes to write: a small cohort in parallel against one process, and one
full-size study.

    python benchmarks/synthetic.py                  # 200 small studies, baseline on the same 200
    python benchmarks/synthetic.py --n 40 --baseline-n 20

Prints seconds, studies per second, files and bytes written, and the speed-up of the parallel run over
the single-process baseline (both measured here, in this run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from cmr_clip.synthetic import make_cohort


def _timed_cohort(out: Path, n: int, size: str, workers: int, seed: int) -> tuple[float, int, int]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    make_cohort(out, n, seed=seed, size=size, num_workers=workers, progress=False)
    seconds = time.perf_counter() - start
    files = [p for p in (out / "studies").rglob("*") if p.is_file()]
    return seconds, len(files), sum(p.stat().st_size for p in files)


def _row(label: str, n: int, seconds: float, files: int, size: int) -> str:
    return f"{label:<34} {n:>5} {seconds:>9.1f} {n / seconds:>10.2f} {files:>8} {size / 2**20:>9.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="small studies in the parallel run")
    parser.add_argument("--baseline-n", type=int, default=None, help="small studies in the 1-process run (default: --n)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    baseline_n = args.baseline_n or args.n
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parallel = _timed_cohort(tmp / "parallel", args.n, "small", args.workers, args.seed)
        single = _timed_cohort(tmp / "single", baseline_n, "small", 1, args.seed)
        full = _timed_cohort(tmp / "full", 1, "full", 1, args.seed)
    print(f"{'run':<34} {'n':>5} {'seconds':>9} {'studies/s':>10} {'files':>8} {'MiB':>9}")
    print(_row(f"small, {args.workers} processes", args.n, *parallel))
    print(_row("small, 1 process (baseline)", baseline_n, *single))
    print(_row("full, 1 process", 1, *full))
    speedup = (args.n / parallel[0]) / (baseline_n / single[0])
    print(f"parallel / 1-process throughput: {speedup:.2f}x with {args.workers} processes")


if __name__ == "__main__":
    main()
