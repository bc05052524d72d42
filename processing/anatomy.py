"""Where a study's own heart lies: the LV and RV blood pools in the short-axis cine, and from them the septum.

Long-axis views are defined by the AHA segment model relative to the septum (the wall the LV shares with
the RV), so they can only be told apart against the study's own anatomy. This module decodes a handful of
frames of the mid-ventricular short-axis cine slice (end-diastole and a few systolic phases; nothing else
of the study is decoded here) and finds:

- the bright blood pools (bright-blood threshold on the end-diastolic frame, eroded once so that thin
  partial-volume bridges through a wall do not join two pools),
- the LV: the largest round pool; its blood signal sets a second, tighter threshold (pericardial fluid and
  fat are a little darker than blood) under which the RV is the pool with the most area close beside the
  LV that wraps only part of the way round it (a pericardial effusion or epicardial fat wraps all the way);
- one of the two must contract (shrink between end-diastole and end-systole): static bright tissue is not
  a ventricle. A failing RV may hardly move, so motion is not required of each.

The septum direction is the direction from the LV centre towards the RV centre; the anterior direction
follows from the handedness of normal situs: anterior = septal x (base -> apex).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import CMRStudyError
from .geometry import base_to_apex
from .pixels import decode_frame
from .study import Series

# Fractions of the R-R interval decoded besides end-diastole (phase 0): end-systole lies among them.
SYSTOLIC_FRACTIONS = (0.25, 0.35, 0.45)
BLOOD_THRESHOLD = 0.6  # of the bright-blood level (99th percentile of the end-diastolic frame), to find the LV
RV_BLOOD_FRACTION = 0.8  # of the LV's own blood signal, to find the RV: pericardial fluid and fat are less bright
MIN_POOL_MM2 = 40.0
MIN_SHRINK = 0.08  # one ventricle loses at least this fraction of its bright area in systole
MIN_LV_MM2 = 300.0
LV_MIN_ROUNDNESS = 0.7
RV_REACH_MM = 45.0  # the RV lies within this distance beyond the LV blood pool's radius (septum and RV depth)
RV_MIN_AREA_OF_LV = 0.1
RV_MAX_WRAP = 0.6  # the RV covers at most this fraction of the directions round the LV centre
_WRAP_BINS = 36


@dataclass(frozen=True)
class HeartAnatomy:
    """The heart's own axes in patient coordinates (LPS, mm), from the mid-ventricular short-axis slice."""

    lv_centre: np.ndarray
    long_axis: np.ndarray  # unit, base -> apex
    septal: np.ndarray  # unit, in the short-axis plane, from the LV centre towards the RV centre
    anterior: np.ndarray  # unit, in the short-axis plane: septal x long_axis
    frames_decoded: int

    def aha_angle(self, direction: np.ndarray) -> float:
        """AHA angle (0 anterior, 90 septal, 180 inferior, 270 lateral) of a direction in the short-axis plane."""
        return float(np.degrees(np.arctan2(np.dot(direction, self.septal), np.dot(direction, self.anterior))) % 360.0)


@dataclass(frozen=True)
class _Pool:
    centroid: np.ndarray  # (row, column) in pixels
    area_mm2: float
    roundness: float  # area / area of the circle through its farthest pixel
    shrink: float
    pixels: np.ndarray  # (n, 2) row, column


def locate_heart(reference: Series) -> tuple[HeartAnatomy | None, str]:
    """The heart's anatomy from `reference` (the short-axis cine stack), or None and the reason it was not found."""
    if reference.sequence != "cine" or reference.n_phases < 4 or reference.normal is None:
        return None, "no short-axis cine stack to find the ventricles in"
    slice_frames = reference.grid[reference.n_slices // 2]
    indices = sorted({0, *(int(round(f * len(slice_frames))) % len(slice_frames) for f in SYSTOLIC_FRACTIONS)})
    try:
        images = [decode_frame(slice_frames[i]) for i in indices]
    except (CMRStudyError, ValueError, OSError) as error:
        return None, f"the mid-ventricular short-axis slice could not be decoded ({type(error).__name__})"
    frame = slice_frames[0]
    spacing = frame.pixel_spacing or (1.0, 1.0)
    level = float(np.percentile(images[0], 99.0))
    lv = _find_lv(_moving_pools(images, spacing, BLOOD_THRESHOLD * level)) if level > 0 else None
    if lv is None:
        return None, "no round blood pool in the mid-ventricular short-axis slice"
    blood = float(np.median(images[0][lv.pixels[:, 0], lv.pixels[:, 1]]))
    rv = _find_rv(_moving_pools(images, spacing, RV_BLOOD_FRACTION * blood), lv, spacing)
    if rv is None:
        return None, "no second moving blood pool (the RV) beside the LV in the mid-ventricular short-axis slice"
    long_axis = base_to_apex(reference.normal)
    lv_centre = _to_patient(frame, spacing, lv.centroid)
    septal = _to_patient(frame, spacing, rv.centroid) - lv_centre
    septal -= np.dot(septal, long_axis) * long_axis
    septal /= np.linalg.norm(septal)
    anatomy = HeartAnatomy(
        lv_centre=lv_centre,
        long_axis=long_axis,
        septal=septal,
        anterior=np.cross(septal, long_axis),
        frames_decoded=len(images),
    )
    return anatomy, "ventricles found in the mid-ventricular short-axis cine slice"


def _moving_pools(images: list[np.ndarray], spacing, threshold: float) -> list[_Pool]:
    """Connected regions of the end-diastolic frame above `threshold`, with how much of each stays so in systole."""
    ed = images[0]
    bright = ndimage.binary_erosion(ed > threshold)
    systole = [image > threshold for image in images[1:]]
    labels, count = ndimage.label(bright)
    pixel_mm2 = float(spacing[0] * spacing[1])
    pools = []
    for index in range(1, count + 1):
        mask = labels == index
        area = int(mask.sum())
        if area * pixel_mm2 < MIN_POOL_MM2:
            continue
        rows, cols = np.nonzero(mask)
        centroid = np.array([rows.mean(), cols.mean()])
        reach = np.sqrt(((rows - centroid[0]) * spacing[0]) ** 2 + ((cols - centroid[1]) * spacing[1]) ** 2).max()
        smallest = min(int((mask & s).sum()) for s in systole)
        pools.append(_Pool(centroid, area * pixel_mm2, area * pixel_mm2 / (np.pi * max(reach, 1e-6) ** 2),
                           1.0 - smallest / area, np.stack([rows, cols], axis=1)))
    return pools


def _find_lv(pools: list[_Pool]) -> _Pool | None:
    """The LV: the largest round pool (the descending aorta is round too, but smaller)."""
    round_pools = [p for p in pools if p.roundness >= LV_MIN_ROUNDNESS and p.area_mm2 >= MIN_LV_MM2]
    return max(round_pools, key=lambda p: p.area_mm2, default=None)


def _find_rv(pools: list[_Pool], lv: _Pool, spacing) -> _Pool | None:
    """The RV: the pool with the most area within RV_REACH_MM of the LV blood pool, wrapping part of the way round.

    Only the part of a pool that close counts, so that bright fat of the chest wall further out does not
    win; a ring round the whole heart (effusion, fat) is not the RV. The LV or the RV must contract.
    """
    reach = np.sqrt(lv.area_mm2 / np.pi) + RV_REACH_MM
    pixel_mm2 = float(spacing[0] * spacing[1])
    best, best_area = None, RV_MIN_AREA_OF_LV * lv.area_mm2
    for pool in pools:
        offsets = (pool.pixels - lv.centroid) * np.asarray(spacing, float)
        distance = np.hypot(offsets[:, 0], offsets[:, 1])
        if distance.min() < 0.5 * np.sqrt(lv.area_mm2 / np.pi):
            continue  # the LV itself
        close = distance <= reach
        angles = np.arctan2(offsets[close, 0], offsets[close, 1])
        wrap = np.unique(((angles + np.pi) / (2 * np.pi) * _WRAP_BINS).astype(int) % _WRAP_BINS).size / _WRAP_BINS
        if close.sum() * pixel_mm2 > best_area and wrap <= RV_MAX_WRAP:
            best, best_area = pool, close.sum() * pixel_mm2
    if best is None or max(lv.shrink, best.shrink) < MIN_SHRINK:
        return None
    return best


def _to_patient(frame, spacing, pixel: np.ndarray) -> np.ndarray:
    """Patient coordinates of a (row, column) pixel position of `frame`."""
    row_dir, col_dir = np.asarray(frame.orientation[:3], float), np.asarray(frame.orientation[3:], float)
    return np.asarray(frame.position, float) + pixel[1] * spacing[1] * row_dir + pixel[0] * spacing[0] * col_dir
