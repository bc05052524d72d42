"""How long `prepare` takes on a synthetic cohort: the current code against the code before it was made faster
(`old_code.BEFORE_SPEEDUP`, which writes the same corpus rows), both in fresh processes of this run, on the
same studies, with the demo's processor settings (16 frames, 64 px).

    python benchmarks/prepare.py                    # 40 small studies, 1 process
    python benchmarks/prepare.py --n 400 --num-proc 2   # the demo's step 2

Prints wall seconds and CPU seconds per study (robust to other load on the machine) for both, and the
new/old ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from cmr_clip.synthetic import make_cohort
from old_code import BEFORE_SPEEDUP, old_package, print_comparison, timed_run


def compare_with_old(cohort: Path, out: Path, num_proc: int, rev: str) -> dict:
    """Wall and CPU seconds of preparing `cohort` with the old code and with the new, each into a new folder."""
    setup = ("from cmr_clip.data.prepare import prepare; from cmr_clip.processing import CMRStudyProcessor; "
             "import tempfile")
    statement = (f"prepare({str(cohort / 'studies')!r}, {str(cohort / 'reports.jsonl')!r}, tempfile.mkdtemp(dir={str(out)!r}), "
                 f"processor=CMRStudyProcessor(num_frames=16, image_size=64), num_proc={num_proc}, progress=False)")
    with old_package(rev) as old:
        return {"old": timed_run(old, setup, statement), "new": timed_run(None, setup, statement)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="small synthetic studies to prepare")
    parser.add_argument("--num-proc", type=int, default=1, help="prepare's worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old-rev", default=BEFORE_SPEEDUP, help="the commit whose code is the old one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_cohort(tmp / "cohort", args.n, seed=args.seed, size="small", progress=False)
        load = os.getloadavg()[0]
        times = compare_with_old(tmp / "cohort", tmp, args.num_proc, args.old_rev)
    print(f"load average before: {load:.1f} (other processes on these cores slow every row)")
    print_comparison(times, args.n, f"prepare, {args.n} small studies, {args.num_proc} process(es), old code = {args.old_rev}:")
    return times


if __name__ == "__main__":
    main()
