"""`cmr-clip inspect PATH`: how a study was read, classified and laid out, as text and as a PNG montage.

A source holding several studies is shown study by study (each headed by its index and key, the names
`--study`, `read_study(..., study=)` and the `study` column of `prepare`'s reports accept); `--study` shows one.
`cmr-clip inspect --dicomweb URL --study UID` shows a study on a PACS (without `--study`, every MR study there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..processing import CMRStudyError, StudyLayout, list_studies
from ..processing.dicomweb import as_dicomweb_source
from ..processing.display import study_summary
from ..processing.reader import pick_study
from .base import UsageError, add_dicomweb_arguments, dicomweb_server, outcome, print_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="a study folder (DICOMDIR honoured), a zip archive or a DICOM file")
    add_dicomweb_arguments(parser)
    parser.add_argument("--layout", default="default", choices=["default", "reference"], help="layout whose frames are listed")
    parser.add_argument("--num-frames", type=int, default=None, help="frames of the default layout (16 unless given)")
    parser.add_argument("--montage", default=None, metavar="PNG",
                        help="also write a montage of the selected frames here (one per study, named -<key>.png, when several)")
    parser.add_argument("--study", default=None, help="of a source holding several studies, show only this one (index or key)")
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
            raise UsageError(f"--override {item!r}: expected PATTERN=SEQUENCE/VIEW, e.g. '*cine*sa*=cine/sax'")
        overrides[key] = (sequence, view)
    return overrides


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.override)
    layout = StudyLayout.named(args.layout, args.num_frames)
    server = dicomweb_server(args)
    if (server is None) == (args.path is None):
        raise UsageError("give a study PATH or --dicomweb URL (with --study UID for one study), not both")
    studies = list_studies(as_dicomweb_source(server, args.study) if server else args.path)
    if args.study is not None:
        studies = [pick_study(studies, args.study)]
    failed = 0
    for part in studies:
        if len(studies) > 1 or args.study is not None:
            print(f"=== {part.describe()} ===")
        try:
            study = part.read(overrides)
            print(study_summary(study, layout=layout))
            if args.montage:
                montage = _montage_path(args.montage, part.key if len(studies) > 1 else None)
                study.montage(montage, layout=layout)
                print(f"montage written to {montage}")
        except CMRStudyError as error:
            print_error("inspect", error)
            failed += 1
    return outcome(len(studies) - failed, failed)


def _montage_path(path: str, key: str | None) -> Path:
    """The montage file; with several studies, one per study named after its key."""
    path = Path(path)
    return path if key is None else path.with_name(f"{path.stem}-{key}{path.suffix or '.png'}")
