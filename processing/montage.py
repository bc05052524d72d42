"""PNG montage of the frames a layout selects: what the model will see, labelled without identifiers."""

from __future__ import annotations

import math

from .layout import StudyLayout, select_frames


def save_montage(study, path, layout: StudyLayout | None = None, columns: int = 8) -> None:
    """Write the selected frames (8-bit, windowed per series) as a grid, each titled entry/slice/phase."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("montages need matplotlib: pip install 'cmr-clip[plot]'") from error
    from .feature_extraction_cmr_study import decode_selected, frame_key

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
