"""One exam of one heart: the series a cardiac MRI protocol acquires, rendered with noise.

The order is the usual one: scouts, cine long axes (one of them repeated after a failed breath-hold),
cine short-axis stack, native T1 map, then after contrast a TI scout and LGE (short axis and long axes,
magnitude and, for PSIR protocols, phase-sensitive). Pixel values here are vendor-neutral signals
(blood on cine ~ 1); vendors scale them when they write DICOM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .imaging import NOISE_SIGMA, PlaneSampler, cine_signal, ghosting, ir_signal, native_t1, null_ti, rician
from .phantom import Heart
from .planning import Plane, Protocol, draw_matrix, plan_lax, plan_localizer, plan_sax

LAX_VIEWS = ("2ch", "4ch", "3ch")


@dataclass
class Frame:
    signal: np.ndarray  # float image, vendor-neutral units (ms for T1 maps)
    plane: Plane
    slice: int
    phase: int
    trigger_time: float | None = None
    inversion_time: float | None = None


@dataclass
class Series:
    kind: str  # localizer | cine | t1_map | ti_scout | lge | psir  (vendor vocabulary key)
    view: str  # sax | 2ch | 3ch | 4ch | other
    role: str  # ground-truth role (see the truth file format)
    sequence: str  # cine | lge | other
    values: str  # magnitude | signed | t1
    frames: list = field(default_factory=list)
    cardiac_images: int = 1
    slice_spacing: float | None = None


@dataclass(frozen=True)
class Exam:
    series: list
    field_strength: float


class _Scanner:
    """Per-exam acquisition state: noise level, trigger delay, breath-holds, and the series it renders."""

    def __init__(self, heart: Heart, field: float, rng: np.random.Generator):
        self.heart = heart
        self.field = field
        self.rng = rng
        self.amyloid = heart.subject.diagnosis == "amyloidosis"
        self.sigma = NOISE_SIGMA[field] * rng.uniform(0.8, 1.25)
        self.trigger_delay = float(rng.uniform(0.0, 12.0))
        self.diastole = int(round(0.75 * heart.n_phases)) % heart.n_phases  # LGE, T1 map, TI scout

    def trigger_time(self, phase: int) -> float:
        return round(self.trigger_delay + phase * self.heart.rr_ms / self.heart.n_phases, 2)

    def breath_hold(self) -> np.ndarray:
        return self.rng.normal(0.0, 1.0, 3) * np.array([0.6, 0.8, 2.0])

    def magnitude(self, image: np.ndarray) -> np.ndarray:
        return rician(image, self.sigma, self.rng)

    def ir(self, ti: float):
        return lambda labels, scar: ir_signal(labels, scar, ti, self.field, self.amyloid)

    def localizer(self, planes) -> Series:
        series = Series("localizer", "other", "localizer", "other", "magnitude")
        for i, plane in enumerate(planes):
            image = PlaneSampler(self.heart, plane, None, self.field).image(0, cine_signal, blur_px=0.8)
            series.frames.append(Frame(self.magnitude(image), plane, i, 0))
        return series

    def cine(self, planes, view: str, role: str = "cine", spacing: float | None = None) -> Series:
        """A cine series: every phase of every plane, with a fresh breath-hold per plane."""
        series = Series("cine", view, role, "cine", "magnitude", cardiac_images=self.heart.n_phases,
                        slice_spacing=spacing)
        for i, plane in enumerate(planes):
            sampler = PlaneSampler(self.heart, plane, self.breath_hold(), self.field)
            for phase in range(self.heart.n_phases):
                image = sampler.image(phase, cine_signal)
                if role == "repeat_discarded":  # the breath-hold failed; the technologist repeats it
                    image = ghosting(image, self.rng)
                series.frames.append(Frame(self.magnitude(image), plane, i, phase, self.trigger_time(phase)))
        return series

    def t1_map(self, plane: Plane) -> Series:
        contrast = lambda labels, scar: native_t1(labels, scar, self.field, self.amyloid)  # noqa: E731
        t1 = PlaneSampler(self.heart, plane, None, self.field).image(self.diastole, contrast, blur_px=0.7)
        series = Series("t1_map", "other", "t1_map", "other", "t1")
        series.frames.append(Frame(np.clip(t1 + self.rng.normal(0.0, 25.0, t1.shape), 0, None), plane, 0, 0))
        return series

    def ti_scout(self, plane: Plane, n_ti: int) -> Series:
        """Inversion-recovery images at rising TIs, from which the LGE TI is chosen."""
        sampler = PlaneSampler(self.heart, plane, None, self.field)
        series = Series("ti_scout", "other", "ti_scout", "other", "magnitude", cardiac_images=n_ti)
        for k, ti in enumerate(np.linspace(110.0, 110.0 + 30.0 * (n_ti - 1), n_ti)):
            image = sampler.image(self.diastole, self.ir(ti))
            ti = round(float(ti), 1)
            series.frames.append(Frame(self.magnitude(image), plane, 0, k, trigger_time=ti, inversion_time=ti))
        return series

    def lge(self, planes, view: str, ti: float, psir: bool, spacing: float | None = None) -> list[Series]:
        """Magnitude LGE and, for PSIR protocols, the phase-sensitive (signed) reconstruction."""
        magnitude = Series("lge", view, "lge", "lge", "magnitude", slice_spacing=spacing)
        signed = Series("psir", view, "lge_psir", "lge", "signed", slice_spacing=spacing)
        timing = dict(trigger_time=self.trigger_time(self.diastole), inversion_time=round(ti, 1))
        for i, plane in enumerate(planes):
            image = PlaneSampler(self.heart, plane, self.breath_hold(), self.field).image(self.diastole, self.ir(ti))
            magnitude.frames.append(Frame(self.magnitude(image), plane, i, 0, **timing))
            signed.frames.append(Frame(image + self.rng.normal(0.0, self.sigma, image.shape), plane, i, 0, **timing))
        return [magnitude, signed] if psir else [magnitude]


def acquire(heart: Heart, protocol: Protocol, field: float, rng: np.random.Generator, psir: bool) -> Exam:
    """Render every series of one exam of `heart`, in acquisition order."""
    scanner = _Scanner(heart, field, rng)
    matrix = draw_matrix(rng, protocol)
    series = [scanner.localizer(plan_localizer(heart, protocol))]
    lax = {view: plan_lax(heart, view, matrix, rng) for view in LAX_VIEWS}
    repeated = str(rng.choice(LAX_VIEWS))
    for view in LAX_VIEWS:
        if view == repeated:
            series.append(scanner.cine([lax[view]], view, role="repeat_discarded"))
        series.append(scanner.cine([lax[view]], view))
    sax, spacing = plan_sax(heart, protocol, matrix, rng)
    series.append(scanner.cine(sax, "sax", spacing=spacing))
    mid = sax[len(sax) // 2]
    series.append(scanner.t1_map(mid))
    series.append(scanner.ti_scout(mid, 8 if protocol.name == "small" else 16))
    ti = null_ti(field, scanner.amyloid) + rng.uniform(-8.0, 8.0)
    lge_sax, lge_spacing = plan_sax(heart, protocol, matrix, rng)
    series.extend(scanner.lge(lge_sax, "sax", ti, psir, spacing=lge_spacing))
    for view in LAX_VIEWS:
        series.extend(scanner.lge([lax[view]], view, ti, psir))
    return Exam(series, field)
