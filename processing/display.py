"""How a `Study` is shown: the summary text (series, classification reasons, skipped files, what a layout
uses) and the PNG montage of the frames a layout selects. Nothing shown carries a UID, a path or any
other identifier; `Study` and `Series` stay plain data and call these for their printed forms.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .decoding import decode_selected, frame_key
from .layout import StudyLayout, select_frames

if TYPE_CHECKING:
    from .study import Series, Study

SKIPPED_SHOWN = 50


def series_line(series: Series) -> str:
    """One line per series: number, description, sequence/view, role, grid size, confidence, used or not."""
    number = "?" if series.series_number is None else str(series.series_number)
    merged = f" (merged from series {', '.join(str(n) for n in series.merged_series_numbers)})" if len(series.merged_series_numbers) > 1 else ""
    status = series_status(series)
    description = series.description or "<no description>"
    return (
        f"#{number:>4} {description[:32]:<32} {series.sequence:>5}/{series.view:<5} {series.role:<16} "
        f"{series.n_slices:>3} sl x {series.n_phases:>3} ph  conf {series.confidence:.2f}  {status}{merged}"
    )


def series_status(series: Series) -> str:
    """Whether the model gets the series' frames: 'used' or 'set aside'."""
    return "used" if series.used and series.sequence != "other" else "set aside"


def study_summary(study: Study, layout: StudyLayout | None = None) -> str:
    """A readable report: every series with its classification and reasons, skipped files, what a layout uses."""
    lines = [f"Study: {len(study.series)} series, {sum(len(s.frames) for s in study.series)} frames, {len(study.skipped)} files skipped"]
    for series in study.series:
        lines.append("  " + series_line(series))
        lines.extend(f"        - {reason}" for reason in series.reasons)
    if study.skipped:
        lines.append("Skipped files:")
        lines.extend(f"  {item.name}: {item.reason}" for item in study.skipped[:SKIPPED_SHOWN])
        if len(study.skipped) > SKIPPED_SHOWN:
            lines.append(f"  ... and {len(study.skipped) - SKIPPED_SHOWN} more")
    if layout is not None:
        selection = select_frames(study, layout)
        lines.append(f"Layout '{layout.name}' uses {len(selection.frames)} frames:")
        lines.extend(f"  {line}" for line in selection.describe())
        lines.extend(f"  warning: {warning}" for warning in selection.warnings)
    return "\n".join(lines)


def save_montage(study: Study, path, layout: StudyLayout | None = None, columns: int = 8) -> None:
    """Write the frames `layout` selects (the default layout if None; 8-bit, windowed per series) as a PNG
    grid, each titled entry/slice/phase: what the model will see, labelled without identifiers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("montages need matplotlib: pip install 'cmr-clip[plot]'") from error
    selection = select_frames(study, layout or StudyLayout.default())
    images = decode_selected(selection)
    rows = math.ceil(len(selection.frames) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.7), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(selection.frames):
            continue
        item = selection.frames[index]
        if item is None:
            axis.set_title(f"{index}: zeros", fontsize=6)
            continue
        axis.imshow(images[frame_key(item)], cmap="gray", vmin=0, vmax=255)
        axis.set_title(f"{index}: {item.entry} s{item.slice_index} p{item.phase_index}", fontsize=6)
    figure.suptitle(f"layout '{selection.layout}': {len(selection.frames)} frames", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(figure)
