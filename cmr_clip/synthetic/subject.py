"""Subjects of the synthetic cohort: a diagnosis, the findings it brings, and the anatomy that shows them.

A `Subject` is everything about a patient's heart that does not depend on how it is imaged. Its
parameters are drawn so that each finding sits clearly on one side of the clinical threshold that
defines it (`THRESHOLDS`), which is what lets the labels, the phantom's measurements and the report
agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..vocabulary import DIAGNOSES, FINDINGS

# Where each finding starts; sampled values keep clear of these.
THRESHOLDS = {
    "lvef": 50.0,  # % below: LV systolic dysfunction
    "rvef": 45.0,  # % below: RV dysfunction
    "lvedv_ml": 200.0,  # above: LV dilation
    "rvedv_ml": 210.0,  # above: RV dilation
    "max_wall_thickness_mm": 13.0,  # at or above: LV hypertrophy
    "aortic_root_mm": 40.0,  # above: aortic root dilation
}

_DIAGNOSIS_WEIGHTS = (0.34, 0.2, 0.2, 0.13, 0.13)
# Draws allowed to find a subject with a required finding (the rarest, RV dilation, takes about 25 on average).
_MAX_CONDITIONED_DRAWS = 10_000

# Probability of each finding given the diagnosis (findings the diagnosis forces are handled in code).
_FINDING_RATES = {
    "normal": {},
    "icm": {"lv_dysfunction": 0.8, "lv_dilation": 0.45, "rv_dysfunction": 0.15, "pericardial_effusion": 0.05,
            "aortic_dilation": 0.06},
    "nicm": {"lv_dysfunction": 0.9, "lv_dilation": 0.7, "rv_dysfunction": 0.3, "rv_dilation": 0.2, "lge": 0.45,
             "pericardial_effusion": 0.1, "aortic_dilation": 0.05},
    "hcm": {"lv_dysfunction": 0.05, "lge": 0.6, "aortic_dilation": 0.04},
    "amyloidosis": {"lv_dysfunction": 0.4, "rv_dysfunction": 0.3, "pericardial_effusion": 0.5, "lv_hypertrophy": 0.9},
}

TERRITORIES = ("lad", "lcx", "rca")
# The LV long axis, from the anterior direction towards the left in the axial plane, and below it (degrees).
LV_AXIS_AZIMUTH_DEG = (30.0, 65.0)
LV_AXIS_DEPRESSION_DEG = (15.0, 50.0)
# The heart's roll about its long axis (where the septum faces), relative to a typical heart.
SEPTAL_ROLL_DEG = (-50.0, 50.0)


@dataclass(frozen=True)
class Subject:
    """One patient's heart: diagnosis, findings (ground truth) and the parameters that realise them."""

    diagnosis: str
    findings: dict
    lvedv_ml: float
    lvef: float
    rvedv_ml: float
    rvef: float
    wall_mm: float  # end-diastolic LV wall thickness away from the septal bulge
    septal_wall_mm: float  # end-diastolic septal thickness (== wall_mm unless asymmetric hypertrophy)
    lge_pattern: str | None  # subendocardial | transmural | midwall | insertion | diffuse
    lge_territory: str | None  # lad | lcx | rca for ischaemic scars
    lge_transmurality: float
    aortic_root_mm: float
    effusion_mm: float
    heart_rate_bpm: float
    sphericity: float  # LV long semi-axis / short radius at end-diastole
    base_descent_mm: float
    long_axis: tuple  # unit vector base -> apex in patient (LPS) coordinates
    septal_roll_deg: float  # rotation of the septum about the long axis
    heart_offset_mm: tuple  # heart centre relative to the chest centre
    body_size: float  # scales the chest
    sex: str
    age_years: int


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def draw_findings(rng: np.random.Generator, diagnosis: str) -> dict:
    """Boolean findings for a diagnosis, with the co-occurrences the diagnosis makes plausible."""
    if diagnosis not in DIAGNOSES:
        raise ValueError(f"unknown diagnosis {diagnosis!r}; expected one of {DIAGNOSES}")
    findings = {name: bool(rng.random() < _FINDING_RATES[diagnosis].get(name, 0.0)) for name in FINDINGS}
    if diagnosis == "icm":
        findings["lge"] = True
    if diagnosis == "hcm":
        findings["lv_hypertrophy"] = True
    if diagnosis == "amyloidosis":
        findings["lge"] = True
    if findings["lv_dilation"] and diagnosis in ("icm", "nicm"):
        findings["lv_dysfunction"] = True  # dilated ventricles in cardiomyopathy are failing ones
    return findings


def _ejection_fraction(rng, impaired: bool, threshold: float, normal: tuple) -> float:
    if not impaired:
        return _uniform(rng, *normal)
    grade = rng.choice(3, p=(0.4, 0.35, 0.25))
    low, high = ((threshold - 10, threshold - 4), (threshold - 20, threshold - 11), (15.0, threshold - 21))[grade]
    return _uniform(rng, low, high)


def _lge(rng, diagnosis: str, has_lge: bool):
    if not has_lge:
        return None, None, 0.0
    if diagnosis == "icm":
        pattern = "transmural" if rng.random() < 0.4 else "subendocardial"
        return pattern, str(rng.choice(TERRITORIES)), 1.0 if pattern == "transmural" else _uniform(rng, 0.3, 0.6)
    if diagnosis == "hcm":
        return "insertion", None, 0.0
    if diagnosis == "amyloidosis":
        return "diffuse", None, _uniform(rng, 0.3, 0.5)
    return "midwall", None, 0.0


def _long_axis(rng: np.random.Generator) -> tuple:
    """Base -> apex in LPS (x left, y posterior, z head): left, anterior and inferior.

    In adults the LV axis lies some 30-65 degrees to the left of the anterior direction in the axial plane
    and points 15-50 degrees below it (wider in the obese and the elderly); both are drawn over that range.
    """
    azimuth = np.deg2rad(rng.uniform(*LV_AXIS_AZIMUTH_DEG))
    depression = np.deg2rad(rng.uniform(*LV_AXIS_DEPRESSION_DEG))
    axis = np.array([np.sin(azimuth) * np.cos(depression), -np.cos(azimuth) * np.cos(depression), -np.sin(depression)])
    return tuple(float(v) for v in axis)


def draw_subject(rng: np.random.Generator, diagnosis: str | None = None, require: str | None = None) -> Subject:
    """Draw a subject; `diagnosis` fixes the diagnosis, otherwise it is drawn from the cohort mix.

    `require` names a finding the subject must have: diagnosis (unless fixed) and findings are drawn again
    until it is present, so the subject comes from the cohort's own distribution conditioned on that finding,
    with the diagnoses and co-occurring findings it brings (a case drawn for a case-control sample).
    """
    if require is not None and require not in FINDINGS:
        raise ValueError(f"unknown finding {require!r}; expected one of {tuple(FINDINGS)}")
    for _ in range(_MAX_CONDITIONED_DRAWS):
        drawn = diagnosis if diagnosis is not None else str(rng.choice(DIAGNOSES, p=_DIAGNOSIS_WEIGHTS))
        f = draw_findings(rng, drawn)
        if require is None or f[require]:
            break
    else:
        raise ValueError(f"no subject with {require} found in {_MAX_CONDITIONED_DRAWS} draws"
                         + (f" of diagnosis {diagnosis!r}" if diagnosis else ""))
    diagnosis = drawn
    lv_normal_ef = (62.0, 76.0) if diagnosis == "hcm" else (55.0, 70.0)
    lvef = _ejection_fraction(rng, f["lv_dysfunction"], THRESHOLDS["lvef"], lv_normal_ef)
    rvef = _ejection_fraction(rng, f["rv_dysfunction"], THRESHOLDS["rvef"], (52.0, 66.0))
    lvedv = _uniform(rng, 220.0, 320.0) if f["lv_dilation"] else _uniform(rng, 95.0, 175.0)
    rvedv = _uniform(rng, 230.0, 310.0) if f["rv_dilation"] else _uniform(rng, 105.0, 185.0)
    wall = _uniform(rng, 6.5, 10.0)
    septal = wall
    if f["lv_hypertrophy"]:
        if diagnosis == "hcm":
            septal = _uniform(rng, 17.0, 26.0)
            wall = _uniform(rng, 8.0, 11.0)
        else:
            wall = septal = _uniform(rng, 14.5, 19.0)
    pattern, territory, transmurality = _lge(rng, diagnosis, f["lge"])
    return Subject(
        diagnosis=diagnosis,
        findings=f,
        lvedv_ml=lvedv,
        lvef=lvef,
        rvedv_ml=rvedv,
        rvef=rvef,
        wall_mm=wall,
        septal_wall_mm=septal,
        lge_pattern=pattern,
        lge_territory=territory,
        lge_transmurality=transmurality,
        aortic_root_mm=_uniform(rng, 43.0, 52.0) if f["aortic_dilation"] else _uniform(rng, 27.0, 35.0),
        effusion_mm=_uniform(rng, 6.0, 16.0) if f["pericardial_effusion"] else 0.0,
        heart_rate_bpm=_uniform(rng, 52.0, 95.0),
        sphericity=_uniform(rng, 1.9, 2.3) if f["lv_dilation"] else _uniform(rng, 2.4, 2.9),
        base_descent_mm=_uniform(rng, 8.0, 14.0) * min(1.0, lvef / 60.0),
        long_axis=_long_axis(rng),
        septal_roll_deg=_uniform(rng, *SEPTAL_ROLL_DEG),
        heart_offset_mm=tuple(float(v) for v in rng.normal(0.0, 6.0, 3)),
        body_size=_uniform(rng, 0.88, 1.12),
        sex=str(rng.choice(("F", "M"))),
        age_years=int(rng.integers(19, 86)),
    )


def follow_up(rng: np.random.Generator, subject: Subject) -> Subject:
    """The same patient at a later visit: same anatomy and findings, slightly different physiology."""
    def nudge(value: float, low: float, high: float) -> float:
        return float(np.clip(value + rng.normal(0.0, 2.0), low, high))

    lvef_range = (15.0, THRESHOLDS["lvef"] - 4) if subject.findings["lv_dysfunction"] else (55.0, 76.0)
    rvef_range = (15.0, THRESHOLDS["rvef"] - 4) if subject.findings["rv_dysfunction"] else (52.0, 66.0)
    return replace(
        subject,
        lvef=nudge(subject.lvef, *lvef_range),
        rvef=nudge(subject.rvef, *rvef_range),
        heart_rate_bpm=nudge(subject.heart_rate_bpm, 50.0, 100.0),
        heart_offset_mm=tuple(float(v) for v in rng.normal(0.0, 6.0, 3)),
        age_years=subject.age_years + int(rng.integers(1, 3)),
    )
