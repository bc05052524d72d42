"""Plane geometry in the patient coordinate system (DICOM LPS: +x left, +y posterior, +z superior)."""

from __future__ import annotations

import numpy as np

# The LV long axis runs from base to apex towards the patient's left, anterior and inferior.
APEX_DIRECTION = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)
ANTERIOR = np.array([0.0, -1.0, 0.0])
# From the LV towards the RV: to the patient's right, anterior, slightly superior.
LV_TO_RV = np.array([-0.6, -0.7, 0.25]) / np.linalg.norm([-0.6, -0.7, 0.25])
PARALLEL_DEGREES = 10.0


def plane_normal(orientation) -> np.ndarray:
    """Unit normal of an image plane from its ImageOrientationPatient (row and column cosines)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def angle_between_planes(normal_a: np.ndarray, normal_b: np.ndarray) -> float:
    """Angle in degrees (0..90) between two planes given by their normals."""
    cosine = min(1.0, abs(float(np.dot(normal_a, normal_b))))
    return float(np.degrees(np.arccos(cosine)))


def are_parallel(normal_a: np.ndarray, normal_b: np.ndarray, tolerance: float = PARALLEL_DEGREES) -> bool:
    return angle_between_planes(normal_a, normal_b) <= tolerance


def base_to_apex(normal: np.ndarray) -> np.ndarray:
    """The stack normal, signed so that it points from the base of the heart towards the apex."""
    return normal if float(np.dot(normal, APEX_DIRECTION)) >= 0 else -normal


def long_axis_rotation(lax_normal: np.ndarray, sax_normal: np.ndarray) -> float:
    """Where a long-axis plane sits around the LV long axis, in degrees 0..180.

    Measured in the short-axis plane, from the direction from the LV towards the RV (the septum's normal:
    right, anterior and a little up) turning towards the anterior wall. The 4-chamber plane runs along that
    direction (about 0), the 3-chamber plane about 60 degrees on (through the outflow tract) and the
    2-chamber plane, parallel to the septum, about 115.
    """
    trace = np.cross(sax_normal, lax_normal)
    towards_rv = _in_plane(LV_TO_RV, sax_normal)
    anterior_side = np.cross(sax_normal, towards_rv)
    if np.dot(anterior_side, ANTERIOR) < 0:
        anterior_side = -anterior_side
    angle = np.degrees(np.arctan2(np.dot(trace, anterior_side), np.dot(trace, towards_rv)))
    return float(angle % 180.0)


def _in_plane(vector: np.ndarray, normal: np.ndarray) -> np.ndarray:
    projected = vector - np.dot(vector, normal) * normal
    return projected / max(np.linalg.norm(projected), 1e-9)
