"""One exam of one heart: the series a cardiac MRI protocol acquires, rendered with noise.

The order is the usual one: scouts, cine long axes (one of them repeated after a failed breath-hold),
cine short-axis stack, native T1 map, then after contrast a TI scout and LGE (short axis and long axes,
magnitude and, for PSIR protocols, phase-sensitive). Pixel values here are vendor-neutral signals
(blood on cine ~ 1); vendors scale them when they write DICOM.

On request (`extras`, drawn from their own generator so that the rest of the exam does not change) the
exam also holds the series a processor must set aside: a black-blood T2-weighted short-axis stack (STIR or
dark-blood TSE), multi-echo T2*, tagging, phase-contrast flow (magnitude and phase) and first-pass
perfusion; an exam without contrast (`contrast=False`) has no TI scout, no LGE and no perfusion.
Acquisition parameters (TR, TE, TI, echo train) are drawn from the physics of each sequence, wider than
any classifier threshold, and travel with the series as DICOM keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..vocabulary import LONG_AXIS_VIEWS
from .imaging import (
    NOISE_SIGMA,
    PlaneSampler,
    black_blood_t2,
    cine_signal,
    first_pass_signal,
    ghosting,
    gradient_echo_decay,
    ir_signal,
    native_t1,
    null_ti,
    rician,
    tag_grid,
    through_plane_velocity,
)
from .phantom import Heart
from .planning import Plane, Protocol, draw_matrix, plan_lax, plan_localizer, plan_sax

EXTRA_SERIES = ("t2w", "t2star", "tagging", "flow", "perfusion")
# Fat's T1 (ms) by field strength: a STIR's inversion time nulls fat at about T1 ln 2.
_FAT_T1_MS = {1.5: 260.0, 3.0: 380.0}
CONTRAST_AGENT = "Gadobutrol"


@dataclass
class Frame:
    signal: np.ndarray  # float image, vendor-neutral units (ms for T1 maps)
    plane: Plane
    slice: int
    phase: int
    trigger_time: float | None = None
    inversion_time: float | None = None
    echo_time: float | None = None  # only where echoes differ within a series (multi-echo)
    temporal_index: int | None = None  # dynamics of a time series (perfusion), 1-based


@dataclass
class Series:
    kind: str  # localizer | cine | t1_map | ti_scout | lge | psir | t2_stir | t2_tse | ... (vendor vocabulary key)
    view: str  # sax | 2ch | 3ch | 4ch | other
    role: str  # ground-truth role (see the truth file format)
    sequence: str  # cine | lge | other
    values: str  # magnitude | signed | t1
    frames: list = field(default_factory=list)
    cardiac_images: int = 1
    slice_spacing: float | None = None
    dicom: dict = field(default_factory=dict)  # acquisition keywords (RepetitionTime, EchoTime, ...) to write
    named_view: str | None = None  # the plane named in descriptions when `view` (the truth) is "other"


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
        series = Series("ti_scout", "other", "ti_scout", "other", "magnitude", cardiac_images=n_ti,
                        dicom=dict(ContrastBolusAgent=CONTRAST_AGENT))
        for k, ti in enumerate(np.linspace(110.0, 110.0 + 30.0 * (n_ti - 1), n_ti)):
            image = sampler.image(self.diastole, self.ir(ti))
            ti = round(float(ti), 1)
            series.frames.append(Frame(self.magnitude(image), plane, 0, k, trigger_time=ti, inversion_time=ti))
        return series

    def lge(self, planes, view: str, ti: float, psir: bool, spacing: float | None = None) -> list[Series]:
        """Magnitude LGE and, for PSIR protocols, the phase-sensitive (signed) reconstruction."""
        after_contrast = dict(ContrastBolusAgent=CONTRAST_AGENT)
        magnitude = Series("lge", view, "lge", "lge", "magnitude", slice_spacing=spacing, dicom=after_contrast)
        signed = Series("psir", view, "lge_psir", "lge", "signed", slice_spacing=spacing, dicom=dict(after_contrast))
        timing = dict(trigger_time=self.trigger_time(self.diastole), inversion_time=round(ti, 1))
        for i, plane in enumerate(planes):
            image = PlaneSampler(self.heart, plane, self.breath_hold(), self.field).image(self.diastole, self.ir(ti))
            magnitude.frames.append(Frame(self.magnitude(image), plane, i, 0, **timing))
            signed.frames.append(Frame(image + self.rng.normal(0.0, self.sigma, image.shape), plane, i, 0, **timing))
        return [magnitude, signed] if psir else [magnitude]


class _ExtraScanner:
    """The series a processor must recognise and set aside, drawn from their own generator."""

    def __init__(self, scanner: _Scanner, rng: np.random.Generator):
        self.scanner, self.heart, self.rng = scanner, scanner.heart, rng

    def noisy(self, image: np.ndarray) -> np.ndarray:
        return rician(image, self.scanner.sigma, self.rng)

    def t2w(self, planes, spacing: float) -> Series:
        """Black-blood T2-weighted turbo spin echo, one image per slice: STIR (inversion) or dark-blood TSE."""
        stir = bool(self.rng.random() < 0.6)
        kind = "t2_stir" if stir else "t2_tse"
        rr = self.heart.rr_ms
        dicom = dict(RepetitionTime=round(2.0 * rr * self.rng.uniform(0.95, 1.05), 1),
                     EchoTime=round(float(self.rng.uniform(40.0, 95.0)), 1),
                     EchoTrainLength=int(self.rng.integers(11, 33)), FlipAngle=180)
        series = Series(kind, "other", "t2w", "other", "magnitude", slice_spacing=spacing, dicom=dicom,
                        named_view="sax")
        ti = None
        if stir:  # nulls fat: T1(fat) ln 2, give or take what sites choose
            ti = round(_FAT_T1_MS[self.scanner.field] * np.log(2.0) * self.rng.uniform(0.8, 1.2), 1)
        trigger = self.scanner.trigger_time(self.scanner.diastole)
        for i, plane in enumerate(planes):
            image = PlaneSampler(self.heart, plane, self.scanner.breath_hold(), self.scanner.field).image(
                self.scanner.diastole, black_blood_t2)
            series.frames.append(Frame(self.noisy(image), plane, i, 0, trigger_time=trigger, inversion_time=ti))
        return series

    def t2star(self, plane: Plane) -> Series:
        """Multi-echo gradient echo of one slice at one cardiac phase: one image per echo time."""
        n_echoes = int(self.rng.integers(6, 11))
        first, step = self.rng.uniform(1.8, 2.8), self.rng.uniform(1.8, 2.6)
        series = Series("t2star", "other", "t2star", "other", "magnitude", named_view="sax",
                        dicom=dict(RepetitionTime=round(first + step * n_echoes + 3.0, 1), FlipAngle=20))
        sampler = PlaneSampler(self.heart, plane, None, self.scanner.field)
        trigger = self.scanner.trigger_time(int(round(0.3 * self.heart.n_phases)))
        for k in range(n_echoes):
            te = round(float(first + k * step), 2)
            image = sampler.image(self.scanner.diastole, gradient_echo_decay(te))
            series.frames.append(Frame(self.noisy(image), plane, 0, k, trigger_time=trigger, echo_time=te))
        return series

    def tagging(self, plane: Plane) -> Series:
        """SPAMM-tagged cine of one short-axis slice: the grid fades over the cardiac cycle."""
        spacing = round(float(self.rng.uniform(6.0, 9.0)), 1)
        dicom = dict(RepetitionTime=round(float(self.rng.uniform(4.0, 6.5)), 2),
                     EchoTime=round(float(self.rng.uniform(2.2, 3.6)), 2), FlipAngle=int(self.rng.integers(8, 16)),
                     Tagging="GRID", TagSpacingFirstDimension=spacing)
        series = Series("tagging", "other", "tagging", "other", "magnitude", cardiac_images=self.heart.n_phases,
                        dicom=dicom, named_view="sax")
        sampler = PlaneSampler(self.heart, plane, self.scanner.breath_hold(), self.scanner.field)
        for phase in range(self.heart.n_phases):
            grid = tag_grid(plane, spacing, 0.9 * np.exp(-phase / self.heart.n_phases * 1.5))
            image = sampler.image(phase, cine_signal) * grid
            series.frames.append(Frame(self.noisy(image), plane, 0, phase, self.scanner.trigger_time(phase)))
        return series

    def flow(self, plane: Plane) -> list[Series]:
        """Through-plane phase contrast across the aortic root: a magnitude and a velocity (phase) series."""
        n = int(self.rng.integers(20, 31))
        venc = int(self.rng.choice((150, 200, 250)))
        dicom = dict(RepetitionTime=round(float(self.rng.uniform(4.2, 6.0)), 2),
                     EchoTime=round(float(self.rng.uniform(2.3, 3.3)), 2), FlipAngle=int(self.rng.integers(15, 31)))
        magnitude = Series("flow", "other", "flow_magnitude", "other", "magnitude", cardiac_images=n, dicom=dicom)
        phase_series = Series("flow_phase", "other", "flow_phase", "other", "signed", cardiac_images=n,
                              dicom=dict(dicom))
        sampler = PlaneSampler(self.heart, plane, self.scanner.breath_hold(), self.scanner.field)
        peak = self.rng.uniform(80.0, 140.0) / venc
        for k in range(n):
            heart_phase = int(k * self.heart.n_phases / n)
            trigger = round(self.scanner.trigger_delay + k * self.heart.rr_ms / n, 2)
            systole = np.sin(np.pi * min(k / (0.35 * n), 1.0)) if k < 0.35 * n else 0.0
            velocity = sampler.image(heart_phase, through_plane_velocity(peak * systole), blur_px=0.3)
            magnitude.frames.append(Frame(self.noisy(sampler.image(heart_phase, cine_signal)), plane, 0, k, trigger))
            noise = self.rng.normal(0.0, 0.03, velocity.shape)
            phase_series.frames.append(Frame(np.clip(velocity + noise, -1.0, 1.0), plane, 0, k, trigger))
        return [magnitude, phase_series]

    def perfusion(self, planes) -> Series:
        """First-pass perfusion: 3 short-axis slices, one image per heartbeat each, for 40-60 heartbeats."""
        n = int(self.rng.integers(40, 61))
        saturation_delay = round(float(self.rng.uniform(80.0, 130.0)), 1)
        dicom = dict(RepetitionTime=round(float(self.rng.uniform(2.0, 3.0)), 2),
                     EchoTime=round(float(self.rng.uniform(0.9, 1.4)), 2), FlipAngle=int(self.rng.integers(10, 16)),
                     NumberOfTemporalPositions=n, ContrastBolusAgent=CONTRAST_AGENT)
        series = Series("perfusion", "other", "perfusion", "other", "magnitude", dicom=dicom, named_view="sax")
        rr_s = self.heart.rr_ms / 1000.0
        for i, plane in enumerate(planes):
            sampler = PlaneSampler(self.heart, plane, None, self.scanner.field)
            trigger = round(self.scanner.trigger_delay + 20.0 + i * 0.3 * self.heart.rr_ms, 2)
            for d in range(n):
                image = sampler.image(self.scanner.diastole, first_pass_signal(d * rr_s - 3.0))
                series.frames.append(Frame(self.noisy(image), plane, i, d, trigger_time=trigger,
                                           inversion_time=saturation_delay, temporal_index=d + 1))
        return series


def _shifted(plane: Plane, mm: float) -> Plane:
    """`plane` moved `mm` along its normal (negative: towards the base of a short-axis stack)."""
    return replace(plane, position=tuple(round(float(v), 4) for v in np.asarray(plane.position) + mm * plane.normal))


def check_extras(extras, contrast: bool) -> tuple:
    """The requested extra series in acquisition order; ValueError for unknown names or perfusion without contrast."""
    unknown = [name for name in extras if name not in EXTRA_SERIES]
    if unknown:
        raise ValueError(f"unknown extra series {unknown}; expected some of {EXTRA_SERIES}")
    if "perfusion" in extras and not contrast:
        raise ValueError("first-pass perfusion needs contrast: drop 'perfusion' or keep contrast=True")
    return tuple(name for name in EXTRA_SERIES if name in extras)


def _extra_series(extras: tuple, scanner: _Scanner, rng: np.random.Generator, sax: list, spacing: float) -> dict:
    """{name: series} of the requested extras, planned on the short-axis stack."""
    extra = _ExtraScanner(scanner, rng)
    mid = sax[len(sax) // 2]
    basal = sax[0]
    made = {}
    if "t2w" in extras:
        made["t2w"] = [extra.t2w(sax, spacing)]
    if "t2star" in extras:
        made["t2star"] = [extra.t2star(mid)]
    if "tagging" in extras:
        made["tagging"] = [extra.tagging(mid)]
    if "flow" in extras:  # the aortic root lies beyond the base of the short-axis stack
        made["flow"] = extra.flow(_shifted(basal, -float(rng.uniform(15.0, 25.0))))
    if "perfusion" in extras:
        made["perfusion"] = [extra.perfusion([sax[len(sax) // 4], mid, sax[(3 * len(sax)) // 4]])]
    return made


def acquire(heart: Heart, protocol: Protocol, field: float, rng: np.random.Generator, psir: bool,
            extras: tuple = (), contrast: bool = True, extra_rng: np.random.Generator | None = None) -> Exam:
    """Render every series of one exam of `heart`, in acquisition order (see the module doc for extras)."""
    extras = check_extras(extras, contrast)
    scanner = _Scanner(heart, field, rng)
    matrix = draw_matrix(rng, protocol)
    series = [scanner.localizer(plan_localizer(heart, protocol))]
    lax = {view: plan_lax(heart, view, matrix, rng) for view in LONG_AXIS_VIEWS}
    repeated = str(rng.choice(LONG_AXIS_VIEWS))
    for view in LONG_AXIS_VIEWS:
        if view == repeated:
            series.append(scanner.cine([lax[view]], view, role="repeat_discarded"))
        series.append(scanner.cine([lax[view]], view))
    sax, spacing = plan_sax(heart, protocol, matrix, rng)
    series.append(scanner.cine(sax, "sax", spacing=spacing))
    mid = sax[len(sax) // 2]
    series.append(scanner.t1_map(mid))
    made = _extra_series(extras, scanner, extra_rng or np.random.default_rng(), sax, spacing) if extras else {}
    for name in ("t2w", "t2star", "tagging", "flow", "perfusion"):
        series.extend(made.get(name, []))
    if not contrast:
        return Exam(series, field)
    series.append(scanner.ti_scout(mid, 8 if protocol.name == "small" else 16))
    ti = null_ti(field, scanner.amyloid) + rng.uniform(-8.0, 8.0)
    lge_sax, lge_spacing = plan_sax(heart, protocol, matrix, rng)
    series.extend(scanner.lge(lge_sax, "sax", ti, psir, spacing=lge_spacing))
    for view in LONG_AXIS_VIEWS:
        series.extend(scanner.lge([lax[view]], view, ti, psir))
    return Exam(series, field)
