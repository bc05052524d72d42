"""`read_study`: from a PACS export (folder, DICOMDIR, zip or file list) to a classified, ordered `Study`."""

from __future__ import annotations

import logging
from collections import Counter

from .classification import (
    apply_overrides,
    assign_long_axis_views,
    classify_sequence,
    classify_view,
    find_sax_reference,
    resolve_repeats,
    set_aside_phase_contrast_magnitudes,
)
from .errors import NotAStudyError
from .grouping import merge_parallel_slices, split_into_series
from .headers import SkippedFile, scan_headers
from .sources import list_files
from .study import Study

logger = logging.getLogger(__name__)


def read_study(source, overrides: dict | None = None, num_workers: int | None = None) -> Study:
    """Read the headers of every file in `source` (no pixel data) and return the classified `Study`.

    `source` is a directory (searched recursively; a DICOMDIR is honoured), a zip archive, or a list of
    files. `overrides` maps a SeriesInstanceUID or a description pattern (`"*cine*sa*"`) to a
    `(sequence, view)` pair. Raises `NotAStudyError` when no file holds a readable image.
    """
    refs, missing = list_files(source)
    frames, skipped = scan_headers(refs, num_workers=num_workers)
    skipped = [SkippedFile(m.name, m.reason) for m in missing] + skipped
    if not frames:
        reasons = Counter(item.reason.split(" (")[0] for item in skipped)
        detail = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3)) or "no files"
        raise NotAStudyError(f"no readable DICOM image among the study's {len(refs)} files ({detail}). Point to a study folder, zip or file list.")
    study = Study(series=classify_series(frames, overrides), skipped=skipped)
    logger.info("read %d frames in %d series, %d files skipped", len(frames), len(study.series), len(skipped))
    return study


def classify_series(frames, overrides: dict | None = None):
    """Group, order and classify frames into series (the steps after the header pass)."""
    series = split_into_series(frames)
    for item in series:
        classify_sequence(item, part_of_multiplane=item.orientations_in_dicom_series >= 3)
    set_aside_phase_contrast_magnitudes(series)
    apply_overrides(series, overrides)
    for sequence in ("cine", "lge"):
        series = merge_parallel_slices(series, sequence)
    reference = find_sax_reference(series)
    lax_views = assign_long_axis_views(series, reference)
    for item in series:
        if not (item.overridden and item.view != "other"):
            classify_view(item, reference, lax_views)
    resolve_repeats(series)
    return series

