"""From tissue labels to MR images: contrasts, partial volume, coil shading and Rician noise.

Cine is balanced SSFP (bright blood, grey muscle). LGE follows the inversion-recovery signal
M = PD (1 - (1 + m0) exp(-TI / T1)) with post-contrast T1s, TI set at the myocardial null (at the blood
null for amyloidosis, whose blood pool nulls first); its magnitude is the classic LGE image and its sign
the PSIR one. The TI scout is the same signal over rising TIs; the T1 map holds native T1 in ms.
The series a protocol adds besides (see `acquisition.EXTRA_SERIES`) get their own contrasts: black-blood
T2-weighted (dark blood, fat suppressed, fluid bright), multi-echo gradient echo decaying with T2*, first-pass
perfusion (a contrast bolus through the right heart, the left heart, then the myocardium), tag grids laid
over the cine signal, and phase-contrast velocity (signed, through the aorta).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .phantom import N_TISSUES, Heart, Tissue
from .planning import Plane

_BLOOD = (Tissue.LV_BLOOD, Tissue.RV_BLOOD, Tissue.LA, Tissue.RA, Tissue.AORTA)
_MUSCLE = (Tissue.LV_MYO, Tissue.RV_MYO, Tissue.VESSEL_WALL)


def _lut(values: dict, blood, muscle) -> np.ndarray:
    table = np.zeros(N_TISSUES)
    for tissue, value in values.items():
        table[tissue] = value
    table[list(_BLOOD)] = blood
    table[list(_MUSCLE)] = muscle
    return table


CINE = _lut({Tissue.BODY: 0.3, Tissue.FAT: 0.85, Tissue.LUNG: 0.05, Tissue.LIVER: 0.26, Tissue.EFFUSION: 0.8},
            blood=1.0, muscle=0.27)
_IR_PD = _lut({Tissue.BODY: 0.7, Tissue.FAT: 0.9, Tissue.LUNG: 0.12, Tissue.LIVER: 0.7, Tissue.EFFUSION: 1.0},
              blood=1.0, muscle=0.8)
_POST_T1 = _lut({Tissue.AIR: 1000.0, Tissue.BODY: 550.0, Tissue.FAT: 260.0, Tissue.LUNG: 600.0,
                 Tissue.LIVER: 400.0, Tissue.EFFUSION: 2200.0}, blood=280.0, muscle=450.0)
_NATIVE_T1 = _lut({Tissue.BODY: 900.0, Tissue.FAT: 290.0, Tissue.LIVER: 580.0, Tissue.EFFUSION: 2500.0},
                  blood=1580.0, muscle=1000.0)
_SCAR_POST_T1 = 180.0
_SCAR_NATIVE_T1 = 1250.0
_RECOVERY_MS = 1600.0  # time from readout to the next inversion (two R-R intervals)
NOISE_SIGMA = {1.5: 0.045, 3.0: 0.03}  # relative to blood on cine
_BLACK_BLOOD_T2 = _lut({Tissue.BODY: 0.35, Tissue.FAT: 0.12, Tissue.LUNG: 0.03, Tissue.LIVER: 0.22,
                        Tissue.EFFUSION: 1.0}, blood=0.04, muscle=0.42)
_GRE_PD = _lut({Tissue.BODY: 0.5, Tissue.FAT: 0.9, Tissue.LUNG: 0.1, Tissue.LIVER: 0.55, Tissue.EFFUSION: 0.9},
               blood=0.9, muscle=0.6)
_T2STAR_MS = _lut({Tissue.AIR: 1.0, Tissue.BODY: 30.0, Tissue.FAT: 40.0, Tissue.LUNG: 2.0, Tissue.LIVER: 25.0,
                   Tissue.EFFUSION: 200.0}, blood=250.0, muscle=35.0)
_SATURATION_RECOVERY = _lut({Tissue.BODY: 0.2, Tissue.FAT: 0.3, Tissue.LUNG: 0.02, Tissue.LIVER: 0.15,
                             Tissue.EFFUSION: 0.1}, blood=0.15, muscle=0.12)
# Seconds after injection at which the bolus peaks in each compartment, and how much it brightens it.
_BOLUS = (((Tissue.RV_BLOOD, Tissue.RA), 4.0, 0.9), ((Tissue.LV_BLOOD, Tissue.LA, Tissue.AORTA), 9.0, 0.9),
          ((Tissue.LV_MYO,), 12.0, 0.3))


def _field_t1(table: np.ndarray, field: float) -> np.ndarray:
    return table * (1.15 if field >= 3.0 else 1.0)


def cine_signal(labels: np.ndarray, scar: np.ndarray | None) -> np.ndarray:
    return CINE[labels]


def _post_contrast_t1(labels, scar, field: float, amyloid: bool) -> np.ndarray:
    table = _POST_T1.copy()
    if amyloid:  # gadolinium pools in the expanded interstitium; the blood pool clears faster
        table[list(_MUSCLE)] = 320.0
        table[list(_BLOOD)] = 350.0
    t1 = _field_t1(table, field)[labels]
    if scar is not None:
        t1 = np.where(scar, _SCAR_POST_T1 * (1.15 if field >= 3.0 else 1.0), t1)
    return t1


def _ir(t1: np.ndarray, pd: np.ndarray, ti: float) -> np.ndarray:
    m0 = 1.0 - np.exp(-_RECOVERY_MS / t1)
    return pd * (1.0 - (1.0 + m0) * np.exp(-ti / t1))


def null_ti(field: float, amyloid: bool) -> float:
    """The TI a technologist picks from the TI scout: myocardium nulled (blood pool for amyloidosis)."""
    t1 = (350.0 if amyloid else 450.0) * (1.15 if field >= 3.0 else 1.0)
    return float(t1 * np.log(2.0 - np.exp(-_RECOVERY_MS / t1)))


def ir_signal(labels, scar, ti: float, field: float, amyloid: bool) -> np.ndarray:
    """Signed inversion-recovery signal (PSIR); its absolute value is the magnitude LGE image."""
    return 1.6 * _ir(_post_contrast_t1(labels, scar, field, amyloid), _IR_PD[labels], ti)


def native_t1(labels, scar, field: float, amyloid: bool) -> np.ndarray:
    table = _field_t1(_NATIVE_T1, field)
    if amyloid:
        table[list(_MUSCLE)] *= 1.15
    t1 = table[labels]
    t1[labels == Tissue.AIR] = 0.0
    t1[labels == Tissue.LUNG] = 0.0
    if scar is not None:
        t1 = np.where(scar, _SCAR_NATIVE_T1 * (1.2 if field >= 3.0 else 1.0), t1)
    return t1


class PlaneSampler:
    """Samples a heart on one plane: caches pixel positions, chest labels and coil shading.

    Two sub-planes a quarter slice thickness either side of the centre give through-plane partial
    volume; `shift` displaces the anatomy (a breath-hold in a different position).
    """

    def __init__(self, heart: Heart, plane: Plane, shift=None, field: float = 1.5):
        self.heart = heart
        self.plane = plane
        offsets = (-plane.thickness / 4.0, plane.thickness / 4.0)
        shift = np.zeros(3) if shift is None else np.asarray(shift, float)
        self._prepared = [heart.prepare(plane.points(o) - shift) for o in offsets]
        self.shading = coil_shading(heart, plane.points(), field).reshape(plane.rows, plane.cols)
        self._last_labels: tuple[int, list] | None = None

    def image(self, phase: int, contrast, blur_px: float = 0.5) -> np.ndarray:
        """Noise-free image: `contrast(labels, scar) -> signal` averaged over sub-planes, blurred, shaded."""
        total = 0.0
        for labels, scar in self._sub_plane_labels(phase):
            total = total + contrast(labels, scar)
        image = (total / len(self._prepared)).reshape(self.plane.rows, self.plane.cols)
        return gaussian_filter(image, blur_px) * self.shading

    def _sub_plane_labels(self, phase: int) -> list:
        """(labels, scar) of each sub-plane; kept for the last phase asked, which series with several contrasts
        of one phase (TI scout, multi-echo) ask again."""
        if self._last_labels is None or self._last_labels[0] != phase:
            self._last_labels = (phase, [self.heart.labels(prepared, phase) for prepared in self._prepared])
        return self._last_labels[1]

    def labels(self, phase: int) -> np.ndarray:
        """Tissue labels at the plane's pixel centres (no partial volume)."""
        labels, _ = self.heart.labels(self.plane.points(), phase, with_scar=False)
        return labels.reshape(self.plane.rows, self.plane.cols)


def coil_shading(heart: Heart, points: np.ndarray, field: float) -> np.ndarray:
    """Receive-coil sensitivity: anterior and posterior arrays, normalised to 1 at the heart."""
    size = heart.body_size
    anterior = heart.chest_centre + np.array([25.0, -150.0, 0.0]) * size
    posterior = heart.chest_centre + np.array([0.0, 150.0, 0.0]) * size
    width = 2.0 * (170.0 * size) ** 2

    def sensitivity(p):
        d_a = np.sum((p - anterior) ** 2, axis=-1)
        d_p = np.sum((p - posterior) ** 2, axis=-1)
        return 0.35 + np.exp(-d_a / width) + 0.7 * np.exp(-d_p / width)

    shading = sensitivity(points) / sensitivity(heart.lv_centre[None])[0]
    if field >= 3.0:  # B1 inhomogeneity: a broad dip across the heart at 3 T
        d = np.sum((points - heart.lv_centre) ** 2, axis=-1)
        shading *= 1.0 - 0.18 * np.exp(-d / (2.0 * 90.0**2))
    return shading


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise in both channels."""
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imag = rng.normal(0.0, sigma, signal.shape)
    return np.sqrt(real * real + imag * imag)


def ghosting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Respiratory ghosts along the phase-encoding direction, as in a failed breath-hold."""
    shift = int(image.shape[0] // rng.integers(3, 6))
    return gaussian_filter(image, 1.2) + 0.3 * np.roll(image, shift, axis=0) + 0.2 * np.roll(image, -shift, axis=0)


def black_blood_t2(labels: np.ndarray, scar: np.ndarray | None) -> np.ndarray:
    """T2-weighted black-blood turbo spin echo: blood nulled, fat suppressed, fluid (effusion) bright."""
    return _BLACK_BLOOD_T2[labels]


def gradient_echo_decay(echo_time_ms: float):
    """Multi-echo gradient echo at one echo time: proton density times exp(-TE / T2*)."""
    return lambda labels, scar: _GRE_PD[labels] * np.exp(-echo_time_ms / _T2STAR_MS[labels])


def first_pass_signal(seconds: float):
    """Saturation-recovery signal `seconds` after the contrast injection (gamma-variate bolus curves)."""
    table = _SATURATION_RECOVERY.copy()
    for tissues, peak, gain in _BOLUS:
        t = max(seconds, 0.0) / peak  # gamma variate t^2 exp(2 (1 - t)): 1 at the peak
        table[list(tissues)] += gain * t * t * np.exp(2.0 * (1.0 - t))
    return lambda labels, scar: table[labels]


def tag_grid(plane: Plane, spacing_mm: float, depth: float) -> np.ndarray:
    """Multiplicative SPAMM grid on the plane's pixels: dark lines every `spacing_mm`, `depth` in [0, 1]."""
    y = np.arange(plane.rows)[:, None] * plane.spacing[0]
    x = np.arange(plane.cols)[None, :] * plane.spacing[1]
    lines = np.maximum(np.cos(np.pi * x / spacing_mm) ** 8, np.cos(np.pi * y / spacing_mm) ** 8)
    return 1.0 - depth * lines


def through_plane_velocity(fraction: float):
    """Signed velocity (fraction of the encoding velocity) in the aorta; zero in static tissue."""
    return lambda labels, scar: np.where(labels == Tissue.AORTA, fraction, 0.0)
