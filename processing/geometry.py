"""Plane geometry in the patient coordinate system (DICOM LPS: +x left, +y posterior, +z superior)."""

from __future__ import annotations

import numpy as np

# The LV long axis runs from base to apex towards the patient's left, anterior and inferior (used only for
# the sign of a stack's normal: any real heart is within 90 degrees of this).
APEX_DIRECTION = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)
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
