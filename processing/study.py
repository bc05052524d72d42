"""`Study` and `Series`: what the header pass found, grouped, ordered and classified, as plain data.

Frames are kept as header records (`Frame`); pixels are decoded later, only for the frames a layout
selects. In-memory objects hold UIDs (users need them to override a classification); the printed summary, the
reprs (what a notebook shows) and everything written out do not, nor any path. How they print
and the montage live in `display.py`; the methods here only hand over to it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from ..privacy import study_key
from .display import save_montage, series_line, study_summary
from .headers import Frame, SkippedFile
from .layout import StudyLayout


@dataclass(repr=False)
class Series:
    """One series as the model sees it: frames on a [slice][phase] grid, slices base to apex, phases by trigger time.

    A series may be part of a DICOM series (split because it mixed orientations or image types) or several
    DICOM series merged into one stack (one series per slice, as GE exports cine); `series_instance_uids`
    lists the DICOM series it came from, `series_instance_uid` is the first of them.
    """

    series_instance_uid: str
    series_number: int | None
    description: str
    grid: list[list[Frame]]
    normal: np.ndarray | None = None
    slice_positions: list[float] = field(default_factory=list)
    series_instance_uids: list[str] = field(default_factory=list)
    merged_series_numbers: list[int | None] = field(default_factory=list)
    sequence: str = "other"
    view: str = "other"
    role: str = "other"
    confidence: float = 0.0
    reasons: list[str] = field(default_factory=list)
    used: bool = True
    overridden: bool = False
    orientations_in_dicom_series: int = 1
    view_warning: str = ""  # why the view is doubtful (a long-axis plane left 'other', a description the anatomy contradicts)

    @property
    def frames(self) -> list[Frame]:
        """All frames in order: slice by slice (base to apex), each slice's phases in trigger-time order."""
        return [frame for slice_frames in self.grid for frame in slice_frames]

    @property
    def n_slices(self) -> int:
        return len(self.grid)

    @property
    def n_phases(self) -> int:
        return max((len(slice_frames) for slice_frames in self.grid), default=0)

    @property
    def slice_spacing(self) -> float | None:
        """Median distance between neighbouring slices along the stack normal, from ImagePositionPatient."""
        if len(self.slice_positions) < 2:
            return None
        return float(np.median(np.diff(self.slice_positions)))

    @property
    def first_frame(self) -> Frame:
        return self.grid[0][0]

    @property
    def acquisition_order(self) -> tuple:
        """Sort key: later series (number, then time) come last; the last good repeat wins."""
        first = self.first_frame
        return (self.series_number if self.series_number is not None else -1, first.series_time or 0.0, first.acquisition_time or 0.0)

    def frame_at(self, slice_index: int, phase_index: int) -> Frame:
        return self.grid[slice_index][phase_index]

    def __repr__(self) -> str:
        return f"Series({' '.join(series_line(self).split())})"

    def __str__(self) -> str:
        return series_line(self)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(series_line(self))}</pre>"


@dataclass(repr=False)
class Study:
    """A study: its series (classified and ordered) and the files the header pass set aside.

    `study_instance_uid` is kept for users who need it; `key` (a short hash of it, see `study_key`) is what
    outputs use to tell studies apart.
    """

    series: list[Series]
    skipped: list[SkippedFile] = field(default_factory=list)
    study_instance_uid: str = ""

    @property
    def key(self) -> str:
        return study_key(self.study_instance_uid)

    def find(self, sequence: str, view: str, role: str | None = None) -> Series | None:
        """The series used for (sequence, view): the last good acquisition, or None."""
        for series in self.series:
            if series.used and series.sequence == sequence and series.view == view and (role is None or series.role == role):
                return series
        return None

    @property
    def views_found(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for series in self.series:
            if series.used and series.sequence != "other":
                found.setdefault(series.sequence, [])
                if series.view not in found[series.sequence]:
                    found[series.sequence].append(series.view)
        return found

    def __str__(self) -> str:
        """The summary (see `display.study_summary`) with what the default layout uses."""
        return study_summary(self, StudyLayout.default())

    def __repr__(self) -> str:
        frames = sum(len(s.frames) for s in self.series)
        return f"Study({len(self.series)} series, {frames} frames, {len(self.skipped)} files skipped; print() it for the summary)"

    def _repr_html_(self) -> str:
        """What a notebook shows for a cell ending in `study`: the summary, without paths or UIDs."""
        return f"<pre>{html.escape(str(self))}</pre>"

    def montage(self, path, layout=None, columns: int = 8) -> None:
        """Write a PNG montage of the frames `layout` selects (the default layout if None); needs matplotlib."""
        save_montage(self, path, layout=layout, columns=columns)
