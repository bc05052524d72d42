"""How long the synthetic cohort takes to write: a small cohort in parallel against one process, and one
full-size study; and the current code against the code before it was made faster (`old_code.BEFORE_SPEEDUP`,
which writes the same bytes), both in fresh processes of this run.

    python benchmarks/synthetic.py                  # 200 small studies, baseline on the same 200
    python benchmarks/synthetic.py --n 40 --baseline-n 20 --compare-n 20 --compare-workers 2

Prints wall seconds, studies per second, CPU seconds per study (robust to other load on the machine),
files and bytes written, the speed-up of the parallel run over the single-process baseline, and the
new/old speed ratios (all measured here, in this run).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from cmr_clip.synthetic import make_cohort
from old_code import BEFORE_SPEEDUP, old_package, print_comparison, timed_run


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed_cohort(out: Path, n: int, size: str, workers: int, seed: int) -> tuple[float, float, int, int]:
    shutil.rmtree(out, ignore_errors=True)
    start, cpu = time.perf_counter(), _cpu_seconds()
    make_cohort(out, n, seed=seed, size=size, num_workers=workers, progress=False)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    files = [p for p in (out / "studies").rglob("*") if p.is_file()]
    return seconds, cpu, len(files), sum(p.stat().st_size for p in files)


def _row(label: str, n: int, seconds: float, cpu: float, files: int, size: int) -> str:
    return (f"{label:<30} {n:>5} {seconds:>9.1f} {n / seconds:>10.2f} {cpu / n:>13.2f} {files:>8} "
            f"{size / 2**20:>7.0f}")


def compare_with_old(n: int, workers: int, seed: int, rev: str) -> dict:
    """Wall and CPU seconds of the same cohort written by the old code and by the new, alternately."""
    setup = "from cmr_clip.synthetic import make_cohort; import tempfile"
    statement = (f"make_cohort(tempfile.mkdtemp(), {n}, seed={seed}, size='small', num_workers={workers}, "
                 "progress=False)")
    with old_package(rev) as old:
        return {"old": timed_run(old, setup, statement), "new": timed_run(None, setup, statement)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="small studies in the parallel run")
    parser.add_argument("--baseline-n", type=int, default=None, help="small studies in the 1-process run (default: --n)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-n", type=int, default=20, help="small studies in the new-vs-old comparison (0: skip it)")
    parser.add_argument("--compare-workers", type=int, default=1, help="processes in the new-vs-old comparison")
    parser.add_argument("--old-rev", default=BEFORE_SPEEDUP, help="the commit whose code is the old one")
    args = parser.parse_args(argv)
    baseline_n = args.baseline_n or args.n
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parallel = _timed_cohort(tmp / "parallel", args.n, "small", args.workers, args.seed)
        single = _timed_cohort(tmp / "single", baseline_n, "small", 1, args.seed)
        full = _timed_cohort(tmp / "full", 1, "full", 1, args.seed)
    print(f"load average before: {os.getloadavg()[0]:.1f} (other processes on these cores slow every row)")
    print(f"{'run':<30} {'n':>5} {'seconds':>9} {'studies/s':>10} {'cpu s/study':>13} {'files':>8} {'MiB':>7}")
    print(_row(f"small, {args.workers} processes", args.n, *parallel))
    print(_row("small, 1 process (baseline)", baseline_n, *single))
    print(_row("full, 1 process", 1, *full))
    speedup = (args.n / parallel[0]) / (baseline_n / single[0])
    print(f"parallel / 1-process throughput: {speedup:.2f}x with {args.workers} processes")
    if args.compare_n:
        times = compare_with_old(args.compare_n, args.compare_workers, args.seed, args.old_rev)
        print_comparison(times, args.compare_n, f"synthesis, {args.compare_n} small studies, "
                         f"{args.compare_workers} process(es), old code = {args.old_rev}, fresh processes:")


if __name__ == "__main__":
    main()
