"""Decoding the frames a layout selected: each frame once, windowed per series, with a decodable stand-in
for a frame whose pixel data is damaged (the nearest one of its slice, then of its series)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import CorruptPixelDataError, InconsistentGeometryError, UnreadableSeriesError
from .layout import Selection
from .pixels import ArrayFrame, decode_frame, window_to_uint8

if TYPE_CHECKING:
    from .study import Series


def decode_selected(selection: Selection) -> dict:
    """8-bit images of the selected frames, keyed by (series, slice, phase), windowed per series.

    A frame that cannot be decoded is replaced by the nearest decodable frame of its slice (in time), then
    of its series (by slice, then phase), and `selection.warnings` says so; the window is taken over the
    frames actually shown. Raises `UnreadableSeriesError` for a series with no decodable frame at all.
    """
    by_series: dict[int, tuple[Series, dict]] = {}
    for item in selection.frames:
        if item is not None:
            by_series.setdefault(id(item.series), (item.series, {}))[1][frame_key(item)] = item
    images = {}
    for series, chosen in by_series.values():
        decoder = SeriesDecoder(series)
        shown = {key: decoder.nearest_readable(item.slice_index, item.phase_index) for key, item in chosen.items()}
        selection.warnings.extend(decoder.warnings)
        positions = list(dict.fromkeys(shown.values()))
        windowed = dict(zip(positions, window_to_uint8([decoder.decoded[position] for position in positions])))
        images.update({key: windowed[position] for key, position in shown.items()})
    return images


class SeriesDecoder:
    """Decodes a series' frames on demand, each once, and finds a decodable stand-in for a frame that is not."""

    def __init__(self, series: Series):
        self.series = series
        self.decoded: dict[tuple[int, int], np.ndarray] = {}
        self.failures: dict[tuple[int, int], str] = {}
        self.warnings: list[str] = []

    def nearest_readable(self, slice_index: int, phase_index: int) -> tuple[int, int]:
        """(slice, phase) of the frame to show for this one: itself if it decodes, else the nearest that does."""
        wanted = (slice_index, phase_index)
        if self.readable(wanted):
            return wanted
        for position in self._neighbours(slice_index, phase_index):
            if self.readable(position):
                self.warnings.append(self._replacement_note(wanted, position))
                return position
        raise UnreadableSeriesError(
            f"series {self.series.series_number}: no frame's pixel data can be decoded "
            f"({len(self.failures)} frames tried); the series is damaged, re-export it", series=self.series)

    def readable(self, position: tuple[int, int]) -> bool:
        if position in self.decoded:
            return True
        if position in self.failures:
            return False
        frame = self.series.frame_at(*position)
        if getattr(frame, "pixel_problem", None):
            self.failures[position] = frame.pixel_problem
            return False
        try:
            self.decoded[position] = decode_frame(frame)
        except (CorruptPixelDataError, InconsistentGeometryError) as error:
            if isinstance(frame, ArrayFrame):
                raise  # an array the user gave is a usage error, not a damaged file
            self.failures[position] = f"{type(error).__name__}: pixel data cannot be decoded"
            return False
        return True

    def _neighbours(self, slice_index: int, phase_index: int) -> list[tuple[int, int]]:
        """Other frames of the slice, nearest in time first (TriggerTime, else phase order), then the other
        slices' frames by slice and phase distance; ties go to the earlier frame."""
        grid = self.series.grid
        times = [getattr(frame, "trigger_time", None) for frame in grid[slice_index]]
        if None in times:
            times = list(range(len(grid[slice_index])))
        same_slice = sorted(((slice_index, p) for p in range(len(grid[slice_index])) if p != phase_index),
                            key=lambda position: (abs(times[position[1]] - times[phase_index]), position[1]))
        others = sorted(((s, p) for s in range(len(grid)) if s != slice_index for p in range(len(grid[s]))),
                        key=lambda position: (abs(position[0] - slice_index), abs(position[1] - phase_index), position))
        return same_slice + others

    def _replacement_note(self, wanted: tuple[int, int], used: tuple[int, int]) -> str:
        frame = self.series.frame_at(*wanted)
        instance = "" if getattr(frame, "instance_number", None) is None else f", instance {frame.instance_number}"
        where = f"phase {used[1]} of the same slice" if used[0] == wanted[0] else f"slice {used[0]}, phase {used[1]} of the same series"
        return (f"series {self.series.series_number}, slice {wanted[0]}, phase {wanted[1]}{instance}: "
                f"{self.failures[wanted]}; replaced by {where}")


def frame_key(item) -> tuple:
    return (id(item.series), item.slice_index, item.phase_index)
