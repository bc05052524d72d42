"""A PNG montage of one synthetic study: a row per kind of series (middle slice), a few phases across."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom

_MAX_COLUMNS = 5
_ROW_ORDER = ("localizer", "cine", "repeat_discarded", "t1_map", "ti_scout", "lge", "lge_psir")


def _frame_pixels(study_dir: Path, entry: dict, cache: dict) -> np.ndarray:
    path = study_dir / entry["path"]
    if path not in cache:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
        cache[path] = pixels if pixels.ndim == 3 else pixels[None]
    return cache[path][entry["frame"] or 0]


def _rows(truth: dict) -> list[tuple[str, list[dict]]]:
    """(title, frames to show) per (role, view): the middle slice, up to `_MAX_COLUMNS` phases."""
    groups: dict[tuple, list[dict]] = {}
    for entry in truth["frames"]:
        groups.setdefault((entry["role"], entry["view"]), []).append(entry)
    rows = []
    for (role, view), entries in sorted(groups.items(), key=lambda kv: (_ROW_ORDER.index(kv[0][0]), kv[0][1])):
        slices = sorted({e["slice"] for e in entries})
        middle = slices[len(slices) // 2]
        frames = sorted((e for e in entries if e["slice"] == middle), key=lambda e: e["phase"])
        picks = np.unique(np.linspace(0, len(frames) - 1, min(_MAX_COLUMNS, len(frames))).round().astype(int))
        rows.append((f"{role} {view}".replace(" other", ""), [frames[i] for i in picks]))
    return rows


def save_preview(study_dir, png_path, truth) -> Path:
    """Write a montage of the study in `study_dir` (its truth file `truth` says what each frame is)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the study preview needs matplotlib: pip install 'cmr-clip[plot]'") from exc
    study_dir, png_path = Path(study_dir), Path(png_path)
    truth = json.loads(Path(truth).read_text())
    rows = _rows(truth)
    fig, axes = plt.subplots(len(rows), _MAX_COLUMNS, figsize=(2.0 * _MAX_COLUMNS, 2.1 * len(rows)), squeeze=False)
    cache: dict = {}
    for ax_row, (title, frames) in zip(axes, rows):
        for ax in ax_row:
            ax.axis("off")
        for ax, entry in zip(ax_row, frames):
            image = _frame_pixels(study_dir, entry, cache)
            low, high = np.percentile(image, (1, 99.5))
            ax.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1))
            ax.set_title(f"{title} p{entry['phase']}" if len(frames) > 1 else title, fontsize=8)
    fig.suptitle(f"{truth['study_id']} ({truth['vendor']})", fontsize=10)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
    return png_path
