"""The beating-heart phantom: tissue labels at any point in the scanner frame, for any cardiac phase.

The heart lives in its own frame: x points from the LV axis to the septum (towards the RV), y is the
anterior direction in the short-axis plane, z runs along the LV long axis from the end-diastolic mitral
plane (z = 0) to the apex. The LV is a thick-walled truncated ellipsoid whose volume follows the
subject's ejection fraction, whose base descends towards the fixed apex in systole and whose wall
thickens so that myocardial volume is conserved. The RV is an ellipsoid wrapped on the septum (the LV
bulges into it, leaving a crescent), scaled phase by phase to its own volume curve. Atria, aortic root,
effusion, epicardial fat, lungs, liver, chest wall and descending aorta surround it.

Everything is analytic, so an image of any oblique plane is the label function sampled on that plane's
pixel centres, and `measure` gets the volumes by counting voxels of the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np

from .subject import Subject


class Tissue(IntEnum):
    AIR = 0
    BODY = 1
    FAT = 2
    LUNG = 3
    LIVER = 4
    LV_BLOOD = 5
    LV_MYO = 6
    RV_BLOOD = 7
    RV_MYO = 8
    LA = 9
    RA = 10
    AORTA = 11
    VESSEL_WALL = 12
    EFFUSION = 13


N_TISSUES = len(Tissue)
# The AHA walls of a short-axis slice, each 60 degrees wide, in order from the anterior wall (centred at
# 0 deg) towards the septum; this phantom's septum is centred on its +x axis (the RV's centre line).
AHA_WALLS = ("anterior", "anteroseptal", "inferoseptal", "inferior", "inferolateral", "anterolateral")
# A long-axis plane is named by the two opposite walls it cuts (AHA 17-segment model).
VIEW_OF_WALLS = {
    frozenset(("anterior", "inferior")): "2ch",
    frozenset(("anteroseptal", "inferolateral")): "3ch",
    frozenset(("inferoseptal", "anterolateral")): "4ch",
}
# A crossing this close to the border of two walls cuts neither clearly: the view is ambiguous.
AMBIGUOUS_WALL_DEGREES = 4.0
_AORTIC_ROOT_AHA_DEG = 60.0  # the outflow tract and aortic valve sit over the anteroseptal wall
_SEPTAL_BULGE_WIDTH = np.deg2rad(38.0)
_APICAL_WALL_RATIO = 0.75  # apical cap thickness / lateral wall thickness
_RV_WALL_MM = 3.5
_FAT_MM = 2.5
# sqrt is correctly rounded, so sqrt(x) <= 1.0 exactly when x <= 1 + 2**-52 (sqrt of that rounds down to 1):
# inside-the-RV tests compare squared norms with it and give the booleans the square root would.
_SQRT_AT_MOST_ONE = np.nextafter(1.0, 2.0)


@dataclass(frozen=True)
class PhaseGeometry:
    """LV/RV shape at one phase (lengths in mm, z from the end-diastolic base plane)."""

    contraction: float  # 0 at end-diastole, 1 at end-systole
    base: float  # z of the mitral plane
    a: float  # LV endocardial short radius at the base
    length: float  # LV endocardial long semi-axis (base plane to endocardial apex)
    wall: float  # lateral wall thickness (the septum may be thicker)
    rv_scale: float


def view_of_walls(walls: list[tuple[str, float]]) -> str:
    """The long-axis view a plane is, from the walls it cuts (`Heart.walls_cut`); 'none' when ambiguous."""
    if len(walls) != 2:
        return "none"
    near_border = any(abs(aha % 60.0 - 30.0) < AMBIGUOUS_WALL_DEGREES for _, aha in walls)
    return "none" if near_border else VIEW_OF_WALLS.get(frozenset(w for w, _ in walls), "none")


def contraction_curve(tau: np.ndarray, systole: float) -> np.ndarray:
    """Fraction of the stroke volume ejected at normalised time `tau` in [0, 1): 0 at ED, 1 at ES."""
    tau = np.asarray(tau, dtype=float)
    smooth = lambda u: np.clip(u, 0.0, 1.0) ** 2 * (3.0 - 2.0 * np.clip(u, 0.0, 1.0))  # noqa: E731
    u = (tau - systole) / (1.0 - systole)
    diastole = 1.0 - 0.75 * smooth(u / 0.35) - 0.25 * smooth((u - 0.8) / 0.2)
    return np.where(tau <= systole, 0.5 * (1.0 - np.cos(np.pi * tau / systole)), diastole)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


class Heart:
    """A subject's heart and chest over `n_phases` equally spaced phases of one R-R interval."""

    def __init__(self, subject: Subject, n_phases: int):
        if n_phases < 4:
            raise ValueError(f"n_phases must be at least 4, got {n_phases}")
        self.subject = subject
        self.n_phases = n_phases
        self.rr_ms = 60000.0 / subject.heart_rate_bpm
        systole = 0.30 + 0.1 * np.clip((subject.heart_rate_bpm - 50.0) / 50.0, 0.0, 1.0)
        self.es_phase = int(round(systole * n_phases))
        self.ed_phase = 0
        self._frame(subject)
        self._shape_parameters(subject)
        contraction = contraction_curve(np.arange(n_phases) / n_phases, self.es_phase / n_phases)
        shapes = [self._lv_shape(float(c)) for c in contraction]
        # The RV scale is solved at ED and ES (exact volumes there) and interpolated in between.
        rv_ed = self._rv_scale_for(shapes[self.ed_phase], subject.rvedv_ml * 1000.0)
        rv_es = self._rv_scale_for(shapes[self.es_phase], subject.rvedv_ml * 10.0 * (100.0 - subject.rvef))
        self.phases = [replace(g, rv_scale=rv_ed + g.contraction * (rv_es - rv_ed)) for g in shapes]

    # --- frame and fixed shape -------------------------------------------------------------------
    def _frame(self, s: Subject) -> None:
        e_l = np.asarray(s.long_axis, dtype=float)
        towards_rv = np.array([-0.6, -0.7, 0.25])  # from the LV towards the RV: right, anterior, up
        e_s = towards_rv - towards_rv.dot(e_l) * e_l
        e_s /= np.linalg.norm(e_s)
        e_a = np.cross(e_s, e_l)  # normal situs: the anterior wall is septum x (base -> apex)
        roll = np.deg2rad(s.septal_roll_deg)
        e_s, e_a = np.cos(roll) * e_s + np.sin(roll) * e_a, -np.sin(roll) * e_s + np.cos(roll) * e_a
        self.axes = np.stack([e_s, e_a, e_l])  # rows: heart x, y, z in patient coordinates
        self.body_size = s.body_size
        self.chest_centre = np.zeros(3)

    def _shape_parameters(self, s: Subject) -> None:
        edv = s.lvedv_ml * 1000.0
        self.a_ed = (3.0 * edv / (2.0 * np.pi * s.sphericity)) ** (1.0 / 3.0)
        self.length_ed = s.sphericity * self.a_ed
        self.esv = edv * (1.0 - s.lvef / 100.0)
        self.edv = edv
        theta = np.linspace(-np.pi, np.pi, 720, endpoint=False)
        profile = self.thickness_profile(theta)
        self._m1, self._m2 = profile.mean(), (profile**2).mean()
        self.myo_volume = self._outer_volume(self.a_ed, self.length_ed, s.wall_mm) - self._inner_volume(
            self.a_ed, self.length_ed
        )
        epi_radius = self.a_ed + s.wall_mm * self._m1
        # RV ellipsoid: its septal edge sits inside the LV so the LV bulges into it (a crescent).
        depth = 0.22 * self.a_ed + 14.0
        self.rv_axes = np.array([(0.7 * epi_radius + depth) / 2.0, 1.15 * epi_radius, 0.82 * self.length_ed])
        self.rv_centre_x = 0.3 * epi_radius + self.rv_axes[0]
        lv_centre = np.array([0.0, 0.0, 0.5 * self.length_ed])
        offset = np.array([35.0, -30.0, 0.0]) * s.body_size + np.asarray(s.heart_offset_mm)
        self.origin = self.chest_centre + offset - lv_centre @ self.axes
        self.lv_centre = self.to_patient(lv_centre[None])[0]
        # Nothing cardiac lies farther from the LV centre than this (aortic root and atria included).
        self.radius = 0.5 * self.length_ed + 100.0 + s.effusion_mm

    def thickness_profile(self, theta: np.ndarray) -> np.ndarray:
        """Wall thickness relative to the lateral wall, by angle from the septum (asymmetric septal bulge)."""
        s = self.subject
        bulge = s.septal_wall_mm / s.wall_mm - 1.0
        return 1.0 + bulge * np.exp(-0.5 * (_wrap(theta) / _SEPTAL_BULGE_WIDTH) ** 2)

    def _inner_volume(self, a: float, length: float) -> float:
        return 2.0 / 3.0 * np.pi * a * a * length

    def _outer_volume(self, a: float, length: float, wall: float) -> float:
        mean_sq = a * a + 2.0 * a * wall * self._m1 + wall * wall * self._m2
        return 2.0 / 3.0 * np.pi * mean_sq * (length + _APICAL_WALL_RATIO * wall)

    def _wall_for(self, a: float, length: float) -> float:
        # Myocardial volume is conserved: solve the cubic outer(a, length, wall) - inner = myo_volume.
        k, m1, m2 = _APICAL_WALL_RATIO, self._m1, self._m2
        target = (self.myo_volume + self._inner_volume(a, length)) * 3.0 / (2.0 * np.pi)
        coeffs = [m2 * k, m2 * length + 2.0 * a * m1 * k, 2.0 * a * m1 * length + a * a * k, a * a * length - target]
        roots = np.roots(coeffs)
        real = roots[np.abs(roots.imag) < 1e-6].real
        return float(real[real > 0].min())

    def _lv_shape(self, contraction: float) -> PhaseGeometry:
        base = contraction * self.subject.base_descent_mm
        length = self.length_ed - base
        volume = self.edv - contraction * (self.edv - self.esv)
        a = float(np.sqrt(3.0 * volume / (2.0 * np.pi * length)))
        return PhaseGeometry(contraction, base, a, length, self._wall_for(a, length), rv_scale=1.0)

    # --- coordinates ---------------------------------------------------------------------------------
    def to_heart(self, points: np.ndarray) -> np.ndarray:
        """Patient (LPS, mm) -> heart frame."""
        return (points - self.origin) @ self.axes.T

    def to_patient(self, points: np.ndarray) -> np.ndarray:
        return points @ self.axes + self.origin

    def aha_direction(self, aha_deg: float) -> np.ndarray:
        """Unit vector (patient frame) in the short-axis plane pointing at AHA angle `aha_deg` (0 anterior, 90 septal)."""
        phi = np.deg2rad(90.0 - aha_deg)
        return np.cos(phi) * self.axes[0] + np.sin(phi) * self.axes[1]

    def aortic_root_direction(self) -> np.ndarray:
        """Unit vector (patient frame) in the short-axis plane from the LV axis towards the aortic root."""
        return self.aha_direction(_AORTIC_ROOT_AHA_DEG)

    def walls_cut(self, point, normal, step_mm: float = 0.25) -> list[tuple[str, float]]:
        """The AHA walls a plane cuts in the mid-ventricular short-axis slice at end-diastole, read off the labels.

        The plane (a point and its normal, patient frame) meets the slice half-way from the base to the apex
        in a line; the myocardium along that line comes in runs, one per wall crossed. Each run gives its
        mid-wall AHA angle (0 anterior, 90 septal centre) and the wall it lies in.
        """
        z_mid = 0.5 * self.length_ed
        normal_h = np.asarray(normal, float) @ self.axes.T
        point_h = self.to_heart(np.asarray(point, float)[None])[0]
        direction = np.cross(normal_h, [0.0, 0.0, 1.0])
        direction /= np.linalg.norm(direction)
        # the point of the line nearest the long axis: in-plane, along the normal's in-slice part
        in_slice = normal_h[:2] / max(np.linalg.norm(normal_h[:2]), 1e-9)
        offset = (np.dot(normal_h, point_h) - normal_h[2] * z_mid) / max(np.linalg.norm(normal_h[:2]), 1e-9)
        foot = np.array([in_slice[0] * offset, in_slice[1] * offset, z_mid])
        t = np.arange(-self.radius, self.radius, step_mm)
        q = foot + t[:, None] * direction
        labels, _ = self.heart_labels(HeartPoints(self, q), self.ed_phase, with_scar=False)
        myo = np.flatnonzero(labels == Tissue.LV_MYO)
        runs = np.split(myo, np.flatnonzero(np.diff(myo) > 1) + 1) if myo.size else []
        walls = []
        for run in runs:
            x, y = q[run[len(run) // 2], :2]
            aha = (90.0 - np.degrees(np.arctan2(y, x))) % 360.0
            walls.append((AHA_WALLS[int(((aha + 30.0) % 360.0) // 60.0)], round(float(aha), 1)))
        return walls

    # --- labels --------------------------------------------------------------------------------------
    def _lv(self, hp: "HeartPoints", g: PhaseGeometry):
        z = hp.q[:, 2] - g.base
        outer_r = g.a + g.wall * hp.profile
        outer_l = g.length + _APICAL_WALL_RATIO * g.wall
        s_endo = np.sqrt(hp.r2 / g.a**2 + (z / g.length) ** 2)
        s_epi = np.sqrt(hp.r2 / outer_r**2 + (z / outer_l) ** 2)
        return z, s_endo, s_epi, outer_r, outer_l

    def _rv_norm_squared(self, q: np.ndarray, g: PhaseGeometry, grow: float = 0.0) -> np.ndarray:
        axes = self.rv_axes * g.rv_scale + grow
        dx = (q[:, 0] - self.rv_centre_x) / axes[0]
        return dx * dx + (q[:, 1] / axes[1]) ** 2 + ((q[:, 2] - g.base) / axes[2]) ** 2

    def _rv_norm(self, q: np.ndarray, g: PhaseGeometry, grow: float = 0.0) -> np.ndarray:
        return np.sqrt(self._rv_norm_squared(q, g, grow))

    def _inside_rv(self, q: np.ndarray, g: PhaseGeometry, grow: float = 0.0) -> np.ndarray:
        """`_rv_norm(q, g, grow) <= 1.0`, without the square root (the same booleans: see `_SQRT_AT_MOST_ONE`)."""
        return self._rv_norm_squared(q, g, grow) <= _SQRT_AT_MOST_ONE

    def _rv_scale_for(self, g: PhaseGeometry, volume_mm3: float, step: float = 2.0) -> float:
        # Points outside the LV epicardium sorted by their RV-ellipsoid norm: the scale at which the
        # ellipsoid holds the target volume is the norm of the n-th of them.
        ext = self.rv_axes * 1.8
        xs = np.arange(self.rv_centre_x - ext[0], self.rv_centre_x + ext[0], step) + step / 2
        ys = np.arange(-ext[1], ext[1], step) + step / 2
        zs = np.arange(0.0, ext[2], step) + step / 2 + g.base
        hp = HeartPoints(self, np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3))
        s_epi = self._lv(hp, g)[2]
        norms = np.sort(self._rv_norm(hp.q, g)[s_epi > 1.0])  # g has rv_scale 1
        count = int(round(volume_mm3 / step**3))
        if not 0 < count < norms.size or norms[count - 1] > 1.75:
            raise ValueError(f"RV volume {volume_mm3 / 1000:.0f} ml does not fit this heart's geometry")
        return float(norms[count - 1])

    def heart_labels(self, hp: "HeartPoints", phase: int, with_scar: bool = True):
        """Tissue labels (`Tissue` values, 0 where no cardiac structure) and scar mask (or None)."""
        g = self.phases[phase]
        s = self.subject
        q = hp.q
        z, s_endo, s_epi, outer_r, outer_l = self._lv(hp, g)
        above_base = z >= 0
        lv_blood = above_base & (s_endo <= 1.0)
        lv_myo = above_base & (s_epi <= 1.0) & ~lv_blood
        outside_lv = ~(lv_blood | lv_myo)
        rv_blood = above_base & self._inside_rv(q, g) & outside_lv
        rv_outer = above_base & self._inside_rv(q, g, _RV_WALL_MM) & outside_lv
        heart = lv_myo | lv_blood | rv_outer
        effusion = np.zeros_like(heart)
        if s.effusion_mm > 0:
            effusion = self._shell(hp, z, g, s.effusion_mm, outer_r, outer_l) & ~heart
        fat = self._shell(hp, z, g, s.effusion_mm + _FAT_MM, outer_r, outer_l) & ~heart & ~effusion
        labels = _first_match(
            [lv_blood, lv_myo, rv_blood, rv_outer, effusion, fat],
            [Tissue.LV_BLOOD, Tissue.LV_MYO, Tissue.RV_BLOOD, Tissue.RV_MYO, Tissue.EFFUSION, Tissue.FAT],
            Tissue.AIR,
        )
        beyond_base = np.flatnonzero(z < 0)
        great = self._atria_and_aorta(q[beyond_base], g)
        labels[beyond_base] = np.where(great > 0, great, labels[beyond_base])
        scar = None
        if with_scar and s.lge_pattern:
            scar = self._scar(hp, z, s_endo, s_epi, outer_l) & lv_myo
        return labels, scar

    def _atria_and_aorta(self, q: np.ndarray, g: PhaseGeometry) -> np.ndarray:
        """Labels of the atria and aortic root for points on the atrial side of the mitral plane."""
        la = self._inside_sphere(q, g, self._la_centre(), 0.85 * self.a_ed * (1 + 0.12 * g.contraction))
        ra = self._inside_sphere(q, g, self._ra_centre(), 0.8 * self.a_ed * (1 + 0.1 * g.contraction))
        ao_dist = self._aorta_distance(q, g)
        ao_r = self.subject.aortic_root_mm / 2.0
        return _first_match(
            [ao_dist <= ao_r, ao_dist <= ao_r + 2.0, la, ra],
            [Tissue.AORTA, Tissue.VESSEL_WALL, Tissue.LA, Tissue.RA],
            Tissue.AIR,
        )

    def _shell(self, hp, z, g, grow_mm, outer_r, outer_l):
        lv = hp.r2 / (outer_r + grow_mm) ** 2 + (z / (outer_l + grow_mm)) ** 2 <= 1.0
        rv = self._inside_rv(hp.q, g, _RV_WALL_MM + grow_mm)
        return (lv | rv) & (z >= -grow_mm / 2)

    def _la_centre(self):
        return np.array([-0.35 * self.a_ed, -0.3 * self.a_ed, -0.75 * self.a_ed])

    def _ra_centre(self):
        return np.array([self.rv_centre_x + 0.2 * self.rv_axes[0], -0.3 * self.a_ed, -0.7 * self.a_ed])

    @staticmethod
    def _inside_sphere(q, g, centre, radius):
        d = q - centre - np.array([0.0, 0.0, g.base])
        return np.einsum("ij,ij->i", d, d) <= radius * radius

    def _aorta_distance(self, q, g):
        phi = np.deg2rad(90.0 - _AORTIC_ROOT_AHA_DEG)
        start = np.array([0.45 * self.a_ed * np.cos(phi), 0.45 * self.a_ed * np.sin(phi), g.base])
        direction = np.array([0.45 * np.cos(phi), 0.45 * np.sin(phi), -0.9])
        direction /= np.linalg.norm(direction)
        d = q - start
        t = np.clip(d @ direction, 0.0, 60.0)
        off = d - t[:, None] * direction
        return np.sqrt(np.einsum("ij,ij->i", off, off))

    def _scar(self, hp, z, s_endo, s_epi, outer_l):
        s = self.subject
        depth = np.clip((s_endo - 1.0) / np.maximum(s_endo - s_epi, 1e-6), 0.0, 1.0)
        zf = z / outer_l
        near = hp.within_angle
        if s.lge_pattern in ("subendocardial", "transmural"):
            territory = {
                "lad": near(45, 65) & (zf >= 0.25) | (zf >= 0.75),
                "lcx": near(165, 45) & (zf <= 0.7),
                "rca": near(285, 45) & (zf <= 0.7),
            }[s.lge_territory]
            return territory & (depth <= s.lge_transmurality)
        if s.lge_pattern == "midwall":
            return near(0, 50) & (depth >= 0.35) & (depth <= 0.65) & (zf >= 0.12) & (zf <= 0.7)
        if s.lge_pattern == "insertion":
            return (near(70, 18) | near(-70, 18)) & (depth >= 0.2) & (depth <= 0.8) & (zf <= 0.6)
        return depth <= s.lge_transmurality  # diffuse subendocardial (amyloidosis)

    def background_labels(self, points: np.ndarray) -> np.ndarray:
        """Chest labels (body, subcutaneous fat, lungs, liver, descending aorta) at patient points."""
        p = (points - self.chest_centre) / self.body_size
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        body = (x / 170.0) ** 2 + (y / 120.0) ** 2 <= 1.0
        inner = (x / 157.0) ** 2 + (y / 107.0) ** 2 <= 1.0
        lung = ((np.abs(x) - 92.0) / 72.0) ** 2 + ((y - 12.0) / 88.0) ** 2 + ((z - 30.0) / 150.0) ** 2 <= 1.0
        liver = ((x + 30.0) / 140.0) ** 2 + ((y - 10.0) / 105.0) ** 2 + ((z + 165.0) / 105.0) ** 2 <= 1.0
        desc_aorta = (x - 28.0) ** 2 + (y - 72.0) ** 2 <= 11.0**2
        return _first_match(
            [~body, ~inner, desc_aorta, liver, lung],
            [Tissue.AIR, Tissue.FAT, Tissue.AORTA, Tissue.LIVER, Tissue.LUNG],
            Tissue.BODY,
        )

    def prepare(self, points: np.ndarray) -> "PreparedPoints":
        """Everything about patient-frame points that does not change with the phase."""
        d = points - self.lv_centre
        near = np.flatnonzero(np.einsum("ij,ij->i", d, d) <= self.radius**2)
        return PreparedPoints(self.background_labels(points), near, HeartPoints(self, self.to_heart(points[near])))

    def labels(self, points, phase: int, with_scar: bool = True):
        """Tissue labels and scar mask at patient-frame points (an array or `prepare`d) for one phase."""
        prepared = points if isinstance(points, PreparedPoints) else self.prepare(points)
        labels = prepared.background.copy()
        scar = np.zeros(len(labels), dtype=bool)
        heart, heart_scar = self.heart_labels(prepared.heart_points, phase, with_scar)
        labels[prepared.near] = np.where(heart > 0, heart, labels[prepared.near])
        if heart_scar is not None:
            scar[prepared.near] = heart_scar
        return labels, scar


def _first_match(conditions: list[np.ndarray], values: list, default) -> np.ndarray:
    """uint8 labels as `np.select(conditions, values, default)` gives them (the first condition met wins),
    by masked assignment from the last condition to the first: faster for a few masks of one shape."""
    out = np.full(conditions[0].shape, default, np.uint8)
    for condition, value in zip(reversed(conditions), reversed(values)):
        out[condition] = value
    return out


class HeartPoints:
    """Heart-frame points with their phase-independent polar quantities."""

    def __init__(self, heart: Heart, q: np.ndarray):
        self.q = q
        self.r2 = q[:, 0] ** 2 + q[:, 1] ** 2
        r = np.sqrt(self.r2) + 1e-9
        self.cos, self.sin = q[:, 0] / r, q[:, 1] / r
        self.profile = heart.thickness_profile(np.arccos(np.clip(self.cos, -1.0, 1.0)))

    def within_angle(self, centre_deg: float, half_deg: float) -> np.ndarray:
        """Points whose angle from the septal direction is within `half_deg` of `centre_deg`."""
        c, h = np.deg2rad(centre_deg), np.deg2rad(half_deg)
        return self.cos * np.cos(c) + self.sin * np.sin(c) >= np.cos(h)


@dataclass(frozen=True)
class PreparedPoints:
    background: np.ndarray
    near: np.ndarray  # indices of the points close enough to the heart to evaluate it
    heart_points: HeartPoints


@dataclass(frozen=True)
class Measurements:
    lvef: float
    lvedv_ml: float
    lvesv_ml: float
    rvef: float
    rvedv_ml: float
    rvesv_ml: float
    max_wall_thickness_mm: float
    lv_mass_g: float

    def as_dict(self) -> dict:
        return {k: round(float(v), 1) for k, v in self.__dict__.items()}


def _count_volumes(heart: Heart, phase: int, step: float) -> tuple[float, float, float]:
    g = heart.phases[phase]
    xmax = heart.rv_centre_x + heart.rv_axes[0] * g.rv_scale + _RV_WALL_MM + step
    rmax = max(heart.a_ed + heart.subject.septal_wall_mm, heart.rv_axes[1] * g.rv_scale + _RV_WALL_MM) + step
    xs = np.arange(-rmax, xmax, step) + step / 2
    ys = np.arange(-rmax, rmax, step) + step / 2
    zs = np.arange(g.base, heart.length_ed + 2.0 * heart.subject.septal_wall_mm, step) + step / 2
    q = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3)
    labels, _ = heart.heart_labels(HeartPoints(heart, q), phase, with_scar=False)
    voxel_ml = step**3 / 1000.0
    counts = np.bincount(labels, minlength=N_TISSUES)
    return counts[Tissue.LV_BLOOD] * voxel_ml, counts[Tissue.RV_BLOOD] * voxel_ml, counts[Tissue.LV_MYO] * voxel_ml


def max_wall_thickness(heart: Heart, phase: int = 0) -> float:
    """Largest LV wall thickness in short-axis planes over the basal half of the ventricle (mm)."""
    g = heart.phases[phase]
    theta = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    z = np.linspace(0.0, 0.5 * g.length, 40)[:, None]
    outer_r = g.a + g.wall * heart.thickness_profile(theta)[None]
    outer_l = g.length + _APICAL_WALL_RATIO * g.wall
    thickness = outer_r * np.sqrt(1.0 - (z / outer_l) ** 2) - g.a * np.sqrt(1.0 - (z / g.length) ** 2)
    return float(thickness.max())


def measure(heart: Heart, step: float = 2.0) -> Measurements:
    """Volumes (by voxel counting of the label function), EFs, wall thickness and LV mass."""
    lvedv, rvedv, myo = _count_volumes(heart, heart.ed_phase, step)
    lvesv, rvesv, _ = _count_volumes(heart, heart.es_phase, step)
    return Measurements(
        lvef=100.0 * (lvedv - lvesv) / lvedv,
        lvedv_ml=lvedv,
        lvesv_ml=lvesv,
        rvef=100.0 * (rvedv - rvesv) / rvedv,
        rvedv_ml=rvedv,
        rvesv_ml=rvesv,
        max_wall_thickness_mm=max_wall_thickness(heart, heart.ed_phase),
        lv_mass_g=1.05 * myo,
    )
