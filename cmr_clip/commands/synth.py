"""`cmr-clip synth --output-dir DIR`: write a synthetic cohort of cardiac MRI studies with reports (see `make_cohort`)."""

from __future__ import annotations

import argparse
import time

from ..synthetic import VENDORS, make_cohort
from ..synthetic.acquisition import EXTRA_SERIES
from ..vocabulary import DIAGNOSES
from .base import DONE, add_flag

# make_cohort checks its arguments with ValueError; an optional extra (--preview) may be missing.
ERRORS = (ValueError, ImportError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--output-dir", required=True, help="output folder (studies/, truth/, reports.jsonl)")
    parser.add_argument("--n", type=int, default=20, help="number of studies (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same cohort")
    parser.add_argument("--vendors", nargs="+", choices=VENDORS, default=None,
                        help="vendor styles to draw from (default: all)")
    parser.add_argument("--size", choices=("small", "full"), default="small",
                        help="small: 64-96 px, 12-16 phases (tests, demo); full: scanner-like")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    parser.add_argument("--blank-descriptions", action="store_true",
                        help="leave SeriesDescription, ProtocolName and SequenceName empty")
    parser.add_argument("--extra-series", nargs="+", choices=(*EXTRA_SERIES, "all"), default=(),
                        help="also write series a processor must set aside (T2 black-blood, T2*, tagging, "
                             "phase-contrast flow, perfusion)")
    parser.add_argument("--enrich", type=float, default=0.0,
                        help="share of patients (0-1) drawn as cases of one finding, each finding as often, so rare "
                             "findings get enough studies to learn and measure (default: 0, the natural mix)")
    parser.add_argument("--no-contrast", action="store_true", help="studies without contrast: no TI scout, no LGE")
    parser.add_argument("--preview", action="store_true",
                        help="also write preview.png, a montage of the first study (needs cmr-clip[plot])")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    records = make_cohort(args.output_dir, args.n, seed=args.seed, vendors=args.vendors, size=args.size,
                          num_workers=args.workers, progress=not args.quiet, preview=args.preview,
                          blank_descriptions=args.blank_descriptions,
                          extra_series="all" if "all" in args.extra_series else tuple(args.extra_series),
                          contrast=not args.no_contrast, enrich=args.enrich)
    counts = {d: sum(r["labels"]["diagnosis"] == d for r in records) for d in DIAGNOSES}
    print(f"wrote {len(records)} studies to {args.output_dir} in {time.perf_counter() - start:.1f} s "
          f"({', '.join(f'{d}: {c}' for d, c in counts.items())})")
    return DONE
