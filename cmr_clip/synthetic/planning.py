"""Imaging planes planned from the anatomy, the way a technologist plans a cardiac exam.

A `Plane` is exactly what DICOM says about an image's geometry: the centre of its first pixel
(ImagePositionPatient), the directions of its rows and columns (ImageOrientationPatient), the pixel
spacing and the matrix. Values are rounded to what the DICOM strings hold before any pixel is
rendered, so the files describe the pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .phantom import Heart


# How far a technologist's long-axis plane may turn about the LV long axis from its landmark (degrees).
LAX_PLANNING_ERROR_DEG = 15.0


@dataclass(frozen=True)
class Protocol:
    """Acquisition sizes for one cohort size ('small' for tests and demos, 'full' scanner-like)."""

    name: str
    matrix_cols: tuple  # choices for the readout (column) count
    row_fraction: tuple  # rows = cols * fraction, rounded to 8 (non-square matrices)
    fov_mm: tuple
    phases: tuple  # inclusive range
    sax_slices: tuple  # inclusive range
    localizer_matrix: int


PROTOCOLS = {
    "small": Protocol("small", (72, 80, 88, 96), (0.75, 1.0), (230.0, 270.0), (12, 16), (8, 10), 64),
    "full": Protocol("full", (208, 224, 240, 256), (0.75, 1.0), (320.0, 380.0), (25, 30), (10, 14), 256),
}


def get_protocol(size: str) -> Protocol:
    if size not in PROTOCOLS:
        raise ValueError(f"size must be one of {sorted(PROTOCOLS)}, got {size!r}")
    return PROTOCOLS[size]


@dataclass(frozen=True)
class Plane:
    position: tuple  # patient coordinates of the centre of pixel (0, 0), mm
    row_dir: tuple  # direction along a row (increasing column index)
    col_dir: tuple  # direction down a column (increasing row index)
    rows: int
    cols: int
    spacing: tuple  # (between rows, between columns), mm: DICOM PixelSpacing order
    thickness: float

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    def points(self, offset: float = 0.0) -> np.ndarray:
        """Patient coordinates of every pixel centre, row-major, shifted `offset` mm along the normal."""
        r = np.arange(self.rows)[:, None, None] * self.spacing[0] * np.asarray(self.col_dir)
        c = np.arange(self.cols)[None, :, None] * self.spacing[1] * np.asarray(self.row_dir)
        p = np.asarray(self.position) + r + c + offset * self.normal
        return p.reshape(-1, 3)

    def centre(self) -> np.ndarray:
        return self.points()[[0, -1]].mean(axis=0)


def plane_at(centre, row_dir, col_dir, rows: int, cols: int, spacing: float, thickness: float) -> Plane:
    """A plane of `rows` x `cols` square pixels centred on `centre`, with DICOM-rounded geometry."""
    row_dir = np.round(np.asarray(row_dir, float) / np.linalg.norm(row_dir), 6)
    col_dir = np.round(np.asarray(col_dir, float) / np.linalg.norm(col_dir), 6)
    spacing = round(float(spacing), 4)
    corner = np.asarray(centre) - (cols - 1) / 2 * spacing * row_dir - (rows - 1) / 2 * spacing * col_dir
    return Plane(
        position=tuple(round(float(v), 4) for v in corner),
        row_dir=tuple(float(v) for v in row_dir),
        col_dir=tuple(float(v) for v in col_dir),
        rows=int(rows),
        cols=int(cols),
        spacing=(spacing, spacing),
        thickness=round(float(thickness), 2),
    )


@dataclass(frozen=True)
class Matrix:
    rows: int
    cols: int
    spacing: float


def draw_matrix(rng: np.random.Generator, protocol: Protocol) -> Matrix:
    cols = int(rng.choice(protocol.matrix_cols))
    rows = int(8 * round(cols * rng.uniform(*protocol.row_fraction) / 8))
    return Matrix(rows, cols, rng.uniform(*protocol.fov_mm) / cols)


def _in_plane_rotation(u: np.ndarray, v: np.ndarray, angle_deg: float):
    a = np.deg2rad(angle_deg)
    return np.cos(a) * u + np.sin(a) * v, -np.sin(a) * u + np.cos(a) * v


def plan_sax(heart: Heart, protocol: Protocol, matrix: Matrix, rng: np.random.Generator):
    """Short-axis stack perpendicular to the LV long axis, base to apex; returns (planes, spacing)."""
    e_s, e_a, e_l = heart.axes
    first = rng.uniform(3.0, 6.0)
    length = heart.length_ed + heart.subject.wall_mm
    lo, hi = protocol.sax_slices
    spacing = rng.uniform(8.0, 10.0)
    n = int(np.clip(round((length - first) / spacing) + 1, lo, hi))
    spacing = float(np.clip((length - first) / max(n - 1, 1), 8.0, 10.0))
    thickness = min(8.0, spacing)
    row_dir, col_dir = _in_plane_rotation(-e_s, -e_a, rng.uniform(-25.0, 25.0))
    col_dir = np.cross(e_l, row_dir)  # row x col = e_l: the normal points base -> apex
    centre = heart.origin + (10.0 + rng.normal(0.0, 4.0)) * e_s + rng.normal(0.0, 4.0) * e_a
    planes = [
        plane_at(centre + (first + i * spacing) * e_l, row_dir, col_dir, matrix.rows, matrix.cols,
                 matrix.spacing, thickness)
        for i in range(n)
    ]
    return planes, round(spacing, 2)


def lax_landmark(heart: Heart, view: str) -> np.ndarray:
    """The direction in the short-axis plane a technologist aims a long-axis plane along, from the anatomy.

    2CH: parallel to the interventricular septum (through the anterior and inferior walls); 3CH: through
    the LV outflow tract and aortic root; 4CH: through the inferior septum and the RV, towards the
    anterolateral wall.
    """
    if view == "2ch":
        return heart.aha_direction(0.0)
    if view == "3ch":
        return heart.aortic_root_direction()
    if view == "4ch":
        return heart.aha_direction(120.0)
    raise ValueError(f"view must be 2ch, 3ch or 4ch, got {view!r}")


def plan_lax(heart: Heart, view: str, matrix: Matrix, rng: np.random.Generator) -> Plane:
    """A long-axis plane (2ch, 3ch, 4ch) aimed at its landmark, apex towards the bottom.

    Planning is imperfect: the plane, which contains the LV long axis, turns about it by up to
    LAX_PLANNING_ERROR_DEG from the landmark.
    """
    e_l = heart.axes[2]
    landmark = lax_landmark(heart, view)
    u, _ = _in_plane_rotation(landmark, np.cross(e_l, landmark), rng.uniform(-LAX_PLANNING_ERROR_DEG, LAX_PLANNING_ERROR_DEG))
    row_dir, col_dir = _in_plane_rotation(u, e_l, rng.uniform(-12.0, 12.0))
    centre = heart.origin + 0.4 * heart.length_ed * e_l
    return plane_at(centre, row_dir, col_dir, matrix.rows, matrix.cols, matrix.spacing, rng.uniform(6.0, 8.0))


def plan_localizer(heart: Heart, protocol: Protocol) -> list[Plane]:
    """Axial, coronal and sagittal scout planes through the heart."""
    n = protocol.localizer_matrix
    spacing = 400.0 / n
    x, y, z = np.eye(3)
    return [
        plane_at(heart.lv_centre, x, y, n, n, spacing, 10.0),
        plane_at(heart.lv_centre, x, -z, n, n, spacing, 10.0),
        plane_at(heart.lv_centre, y, -z, n, n, spacing, 10.0),
    ]
