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
    def __init__(self, heart: Heart, field: float, rng: np.random.Generator):
        self.heart = heart
        self.field = field
        self.rng = rng
        self.sigma = NOISE_SIGMA[field] * rng.uniform(0.8, 1.25)
        self.trigger_delay = float(rng.uniform(0.0, 12.0))

    def trigger_time(self, phase: int) -> float:
        return round(self.trigger_delay + phase * self.heart.rr_ms / self.heart.n_phases, 2)

    def breath_hold(self) -> np.ndarray:
        return self.rng.normal(0.0, 1.0, 3) * np.array([0.6, 0.8, 2.0])

    def magnitude(self, image: np.ndarray) -> np.ndarray:
        return rician(image, self.sigma, self.rng)

    def cine(self, plane: Plane, slice_index: int = 0, bad: bool = False) -> list:
        sampler = PlaneSampler(self.heart, plane, self.breath_hold(), self.field)
        frames = []
        for phase in range(self.heart.n_phases):
            image = sampler.image(phase, cine_signal)
            if bad:
                image = ghosting(image, self.rng)
            frames.append(Frame(self.magnitude(image), plane, slice_index, phase, self.trigger_time(phase)))
        return frames


def _lge_series(scanner: _Scanner, planes, view: str, ti: float, psir: bool, amyloid: bool) -> list:
    heart, rng = scanner.heart, scanner.rng
    diastole = int(round(0.75 * heart.n_phases)) % heart.n_phases
    contrast = lambda labels, scar: ir_signal(labels, scar, ti, scanner.field, amyloid)  # noqa: E731
    magnitude = Series("lge", view, "lge", "lge", "magnitude")
    signed = Series("psir", view, "lge_psir", "lge", "signed")
    for i, plane in enumerate(planes):
        image = PlaneSampler(heart, plane, scanner.breath_hold(), scanner.field).image(diastole, contrast)
        kw = dict(trigger_time=scanner.trigger_time(diastole), inversion_time=round(ti, 1))
        magnitude.frames.append(Frame(scanner.magnitude(image), plane, i, 0, **kw))
        signed.frames.append(Frame(image + rng.normal(0.0, scanner.sigma, image.shape), plane, i, 0, **kw))
    return [magnitude, signed] if psir else [magnitude]


def acquire(heart: Heart, protocol: Protocol, field: float, rng: np.random.Generator, psir: bool) -> Exam:
    """Render every series of one exam of `heart`."""
    scanner = _Scanner(heart, field, rng)
    matrix = draw_matrix(rng, protocol)
    amyloid = heart.subject.diagnosis == "amyloidosis"
    series = []

    localizer = Series("localizer", "other", "localizer", "other", "magnitude")
    for i, plane in enumerate(plan_localizer(heart, protocol)):
        image = PlaneSampler(heart, plane, None, field).image(0, cine_signal, blur_px=0.8)
        localizer.frames.append(Frame(scanner.magnitude(image), plane, i, 0))
    series.append(localizer)

    lax = {view: plan_lax(heart, view, matrix, rng) for view in LAX_VIEWS}
    repeated = str(rng.choice(LAX_VIEWS))
    for view in LAX_VIEWS:
        if view == repeated:
            bad = Series("cine", view, "repeat_discarded", "cine", "magnitude", cardiac_images=heart.n_phases)
            bad.frames = scanner.cine(lax[view], bad=True)
            series.append(bad)
        good = Series("cine", view, "cine", "cine", "magnitude", cardiac_images=heart.n_phases)
        good.frames = scanner.cine(lax[view])
        series.append(good)

    sax, spacing = plan_sax(heart, protocol, matrix, rng)
    cine_sax = Series("cine", "sax", "cine", "cine", "magnitude", cardiac_images=heart.n_phases, slice_spacing=spacing)
    for i, plane in enumerate(sax):
        cine_sax.frames.extend(scanner.cine(plane, i))
    series.append(cine_sax)

    mid = sax[len(sax) // 2]
    diastole = int(round(0.75 * heart.n_phases)) % heart.n_phases
    t1 = PlaneSampler(heart, mid, None, field).image(
        diastole, lambda labels, scar: native_t1(labels, scar, field, amyloid), blur_px=0.7
    )
    t1_map = Series("t1_map", "other", "t1_map", "other", "t1")
    t1_map.frames.append(Frame(np.clip(t1 + rng.normal(0.0, 25.0, t1.shape), 0, None), mid, 0, 0))
    series.append(t1_map)

    ti_scout = Series("ti_scout", "other", "ti_scout", "other", "magnitude")
    sampler = PlaneSampler(heart, mid, None, field)
    n_ti = 8 if protocol.name == "small" else 16
    for k, ti in enumerate(np.linspace(110.0, 110.0 + 30.0 * (n_ti - 1), n_ti)):
        image = sampler.image(diastole, lambda labels, scar: ir_signal(labels, scar, ti, field, amyloid))
        ti_scout.frames.append(Frame(scanner.magnitude(image), mid, 0, k, trigger_time=round(float(ti), 1),
                                     inversion_time=round(float(ti), 1)))
    ti_scout.cardiac_images = n_ti
    series.append(ti_scout)

    ti = null_ti(field, amyloid) + rng.uniform(-8.0, 8.0)
    lge_sax, lge_spacing = plan_sax(heart, protocol, matrix, rng)
    for s in _lge_series(scanner, lge_sax, "sax", ti, psir, amyloid):
        s.slice_spacing = lge_spacing
        series.append(s)
    for view in LAX_VIEWS:
        series.extend(_lge_series(scanner, [lax[view]], view, ti, psir, amyloid))
    return Exam(series, field)
