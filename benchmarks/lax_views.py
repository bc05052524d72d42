"""Long-axis views from anatomy: how many LAX series get their view right, left 'other', or wrong, per vendor.

    python benchmarks/lax_views.py                  # 60 studies, descriptions blank and present
    python benchmarks/lax_views.py --n 12 --seed 3

The expected view of each long-axis series comes only from the generator's truth record: the AHA walls
its plane actually cuts in the phantom's mid-ventricular slice (`long_axis_planes` in truth/<study>.json),
never from the classifier's constants. Hearts roll over +-50 degrees about their long axis. Prints one
table per description setting (vendor x correct / other / wrong, counted over cine and LGE long-axis
series), the hearts' roll range, and the cost of locating the anatomy next to the header pass.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from cmr_clip.processing import read_study
from cmr_clip.processing.anatomy import locate_heart
from cmr_clip.processing.classification import find_sax_reference
from cmr_clip.synthetic import make_cohort

OUTCOMES = ("correct", "other", "wrong")


def score_long_axis(study, truth: dict) -> list[dict]:
    """One row per classified long-axis series: its expected view (from the anatomy record) and the outcome."""
    where = {}
    for series in study.series:
        for frame in series.frames:
            where[(frame.file.name, frame.frame_index)] = series
    rows, seen = [], set()
    for expected in truth["frames"]:
        if "planned_view" not in expected:
            continue
        series = where[(expected["path"], expected["frame"])]
        if id(series) in seen or series.sequence == "other":
            continue
        seen.add(id(series))
        if series.view == expected["view"]:
            outcome = "correct"
        elif series.view == "other":
            outcome = "other"
        else:
            outcome = "wrong"
        rows.append({"vendor": truth["vendor"], "series_number": series.series_number, "sequence": series.sequence,
                     "expected": expected["view"], "planned": expected["planned_view"], "got": series.view, "outcome": outcome,
                     "warned": bool(series.view_warning), "reasons": series.reasons[-2:]})
    return rows


def score_cohort(cohort_dir: Path, timings: dict | None = None) -> list[dict]:
    """Rows of `score_long_axis` for every study; `timings` collects seconds of read_study and of locate_heart."""
    rows = []
    for truth_path in sorted((Path(cohort_dir) / "truth").glob("*.json")):
        truth = json.loads(truth_path.read_text())
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = read_study(Path(cohort_dir) / "studies" / truth["study_id"])
        read_s = time.perf_counter() - start
        if timings is not None:
            start = time.perf_counter()
            found, _ = locate_heart(find_sax_reference(study.series))
            timings.setdefault("read", []).append(read_s)
            timings.setdefault("anatomy", []).append(time.perf_counter() - start)
            timings.setdefault("frames", []).append(found.frames_decoded if found else 0)
        rows += [{**row, "study_id": truth["study_id"], "roll": truth["septal_roll_deg"]}
                 for row in score_long_axis(study, truth)]
    return rows


def table(rows: list[dict]) -> str:
    counts: dict = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for row in rows:
        counts[row["vendor"]][row["outcome"]] += 1
        counts["all"][row["outcome"]] += 1
    lines = [f"{'vendor':<8} {'correct':>7} {'other':>7} {'wrong':>7} {'correct %':>9}"]
    for vendor in sorted(counts, key=lambda v: (v == "all", v)):
        c = counts[vendor]
        total = sum(c.values())
        lines.append(f"{vendor:<8} {c['correct']:>7} {c['other']:>7} {c['wrong']:>7} {100.0 * c['correct'] / max(total, 1):>8.1f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for blank in (True, False):
            out = Path(tmp) / ("blank" if blank else "named")
            make_cohort(out, args.n, seed=args.seed, progress=False, num_workers=args.workers, blank_descriptions=blank)
            timings: dict = {}
            rows = score_cohort(out, timings)
            rolls = sorted({row["roll"] for row in rows})
            print(f"\n{args.n} studies, descriptions {'blank' if blank else 'present'}, heart roll {rolls[0]:+.0f}..{rolls[-1]:+.0f} deg, "
                  f"{len(rows)} long-axis series:")
            print(table(rows))
            unwarned = sum(row["outcome"] == "other" and not row["warned"] for row in rows)
            print(f"'other' without a warning: {unwarned}")
            print(f"read_study {1000 * np.mean(timings['read']):.0f} ms/study (header pass, classification and anatomy); "
                  f"of it locating the anatomy {1000 * np.mean(timings['anatomy']):.1f} ms "
                  f"({np.mean(timings['frames']):.1f} frames decoded)")
            for row in rows:
                if row["outcome"] == "wrong":
                    print(f"  WRONG {row['study_id']} series {row['series_number']}: expected {row['expected']}, got {row['got']}; {row['reasons']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
