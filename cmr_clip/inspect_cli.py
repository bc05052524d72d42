"""`cmr-clip inspect PATH`: how a study was read, classified and laid out, as text and as a PNG montage."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a study folder (DICOMDIR honoured), a zip archive or a DICOM file")
    parser.add_argument("--layout", default="default", choices=["default", "reference"], help="layout whose frames are listed")
    parser.add_argument("--num-frames", type=int, default=None, help="frames of the default layout (16 unless given)")
    parser.add_argument("--montage", default=None, metavar="PNG", help="also write a montage of the selected frames here")
    parser.add_argument(
        "--override", action="append", default=[], metavar="PATTERN=SEQUENCE/VIEW",
        help="force a classification, e.g. '*cine*sa*=cine/sax' or '<SeriesInstanceUID>=lge/4ch' (repeatable)",
    )


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, _, value = item.rpartition("=")
        sequence, _, view = value.partition("/")
        if not key or not sequence or not view:
            raise SystemExit(f"--override {item!r}: expected PATTERN=SEQUENCE/VIEW, e.g. '*cine*sa*=cine/sax'")
        overrides[key] = (sequence, view)
    return overrides


def run(args: argparse.Namespace) -> int:
    from .processing import CMRStudyError, StudyLayout, read_study

    try:
        study = read_study(args.path, overrides=parse_overrides(args.override))
        layout = StudyLayout.named(args.layout, args.num_frames)
        print(study.summary(layout=layout))
        if args.montage:
            study.montage(args.montage, layout=layout)
            print(f"montage written to {args.montage}")
    except CMRStudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
