"""`cmr-clip demo`: the first thing to run. Writes a synthetic cohort, prepares it, trains a small CMR-CLIP on
the CPU, evaluates it on held-out studies, trains a small CMR-TARGET on it and drafts an impression (see
`cmr_clip.demo`); every field of `DemoSettings` is a flag.

    cmr-clip demo --output-dir cmr-clip-demo
"""

from __future__ import annotations

import argparse

from ..demo import DemoSettings, run_demo, summary_table
from ..processing.layout import CINE_PHASES
from ..precision import MIXED_PRECISION_CHOICES
from .base import DONE, FIELD_OF_VIEW_METAVAR, add_dataclass_arguments, field_docs, given_fields, parse_field_of_view


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, DemoSettings, flags={"out": "--output-dir"},
                            choices={"mixed_precision": MIXED_PRECISION_CHOICES, "cine_phases": CINE_PHASES},
                            skip=("field_of_view_mm",))
    # Spelt as `prepare` spells it: millimetres for every view, VIEW=MM pairs, or none (the pixel crop alone).
    parser.add_argument("--field-of-view", dest="field_of_view_mm", metavar=FIELD_OF_VIEW_METAVAR, default=None,
                        help=field_docs(DemoSettings)["field_of_view_mm"].replace("%", "%%"))


def run(args: argparse.Namespace) -> int:
    fields = given_fields(DemoSettings, args)
    if "field_of_view_mm" in fields:  # as given; "none" parses to None, the pixel crop for every view
        fields["field_of_view_mm"] = parse_field_of_view(fields["field_of_view_mm"])
    settings = DemoSettings(**fields)
    metrics = run_demo(settings)
    print(summary_table(metrics, settings))
    return DONE
