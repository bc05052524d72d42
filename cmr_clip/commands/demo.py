"""`cmr-clip demo`: the first thing to run. Writes a synthetic cohort, prepares it, trains a small CMR-CLIP on
the CPU, evaluates it on held-out studies, trains a small CMR-TARGET on it and drafts an impression (see
`cmr_clip.demo`); every field of `DemoSettings` is a flag.

    cmr-clip demo --output-dir cmr-clip-demo
"""

from __future__ import annotations

import argparse

from ..demo import DemoSettings, run_demo, summary_table
from ..precision import MIXED_PRECISION_CHOICES
from .base import DONE, add_dataclass_arguments, given_fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, DemoSettings, flags={"out": "--output-dir"},
                            choices={"mixed_precision": MIXED_PRECISION_CHOICES})


def run(args: argparse.Namespace) -> int:
    settings = DemoSettings(**given_fields(DemoSettings, args))
    metrics = run_demo(settings)
    print(summary_table(metrics, settings))
    return DONE
