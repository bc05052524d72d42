"""`make_cohort`: a synthetic cohort of cardiac MRI studies written as DICOM, with reports and truth.

Layout of `out_dir`:
  studies/<study_id>/...     DICOM files only, in the vendor's export layout
  truth/<study_id>.json      per-frame ground truth for the processor (series, view, role, slice, phase) and,
                             under "long_axis_planes", the AHA walls each planned long-axis plane actually
                             cuts in the phantom; a long-axis frame's "view" is the one those walls imply
                             ('other' when ambiguous), its "planned_view" the one the technologist aimed at
  reports.jsonl              one record per study: impression, labels, vendor, field strength, measurements

Every study is a pure function of (seed, its index), drawn from its own generators, so a cohort is the
same bytes whatever the number of worker processes, and the first k studies of a larger cohort are the
k studies of a smaller one with the same seed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..vocabulary import FINDINGS, LONG_AXIS_VIEWS
from .acquisition import EXTRA_SERIES, acquire, check_extras
from .dicomio import StudyContext, write_exam
from .identity import UIDSource, accession_number, draw_identity, draw_visit_date
from .phantom import Heart, measure, view_of_walls
from .planning import get_protocol
from .preview import save_preview
from .reports import write_impression
from .subject import draw_subject, follow_up
from .vendors import check_vendors, draw_scaling, get_style

_FOLLOW_UP_RATE = 0.15
_PSIR_RATE = {"siemens": 0.85, "ge": 0.4, "philips": 0.7}


@dataclass(frozen=True)
class StudyPlan:
    index: int
    study_id: str
    patient_index: int
    visit: int  # 0 = first study of this patient
    vendor: str
    enriched_for: str | None = None  # a finding this patient was drawn to have (make_cohort's `enrich`)


def study_id(index: int) -> str:
    return f"SYN{index:05d}"


def plan_cohort(n: int, seed: int, vendors, enrich: float = 0.0) -> list[StudyPlan]:
    """Which patient each study belongs to (some patients get a second study), its vendor, and the finding
    a patient is drawn to have, for a share `enrich` of patients (see `make_cohort`)."""
    rng = np.random.default_rng([seed, 0])
    plans: list[StudyPlan] = []
    single_visit: list[StudyPlan] = []
    n_patients = 0
    for i in range(n):
        if single_visit and rng.random() < _FOLLOW_UP_RATE:
            first = single_visit.pop(int(rng.integers(len(single_visit))))
            plans.append(StudyPlan(i, study_id(i), first.patient_index, 1, first.vendor, first.enriched_for))
            continue
        plan = StudyPlan(i, study_id(i), n_patients, 0, str(rng.choice(vendors)), _enriched_for(seed, n_patients, enrich))
        n_patients += 1
        plans.append(plan)
        single_visit.append(plan)
    return plans


def _enriched_for(seed: int, patient_index: int, enrich: float) -> str | None:
    """With probability `enrich`, one of the findings, each as likely, from the patient's own stream (the
    cohort's other draws do not move, and without enrichment nothing is drawn)."""
    if not enrich:
        return None
    rng = np.random.default_rng([seed, 5, patient_index])
    return str(FINDINGS[int(rng.integers(len(FINDINGS)))]) if rng.random() < enrich else None


def patient_id(seed: int, patient_index: int) -> str:
    """A pseudonymous patient id for reports.jsonl (not the MRN in the DICOM headers)."""
    token = np.random.default_rng([seed, 4, patient_index]).integers(16**6)
    return f"SP{patient_index:05d}-{token:06x}"


def _subject_and_identity(plan: StudyPlan, seed: int):
    rng = np.random.default_rng([seed, 1, plan.patient_index])
    subject = draw_subject(rng, require=plan.enriched_for)
    first_date = draw_visit_date(rng)
    identity = draw_identity(rng, subject.sex, subject.age_years, first_date)
    if plan.visit == 0:
        return subject, identity, first_date
    visit_rng = np.random.default_rng([seed, 2, plan.patient_index, plan.visit])
    return follow_up(visit_rng, subject), identity, draw_visit_date(visit_rng, after=first_date)


def make_study(plan: StudyPlan, seed: int, size: str, out_dir: Path, blank_descriptions: bool = False,
               extra_series: tuple = (), contrast: bool = True) -> dict:
    """Render and write one study and its truth file; returns its report record."""
    protocol = get_protocol(size)
    subject, identity, date = _subject_and_identity(plan, seed)
    rng = np.random.default_rng([seed, 3, plan.index])
    style = get_style(plan.vendor)
    field = 3.0 if rng.random() < 0.4 else 1.5
    heart = Heart(subject, int(rng.integers(protocol.phases[0], protocol.phases[1] + 1)))
    measurements = measure(heart).as_dict()
    exam = acquire(heart, protocol, field, rng, psir=bool(rng.random() < _PSIR_RATE[plan.vendor]),
                   extras=tuple(extra_series), contrast=contrast,
                   extra_rng=np.random.default_rng([seed, 5, plan.index]))
    scale, slope = draw_scaling(style, rng)
    ctx = StudyContext(
        identity=identity,
        age_years=subject.age_years,
        date=date,
        accession=accession_number(rng),
        style=style,
        model=str(rng.choice(style.models[field])),
        heart_rate_bpm=subject.heart_rate_bpm,
        rr_ms=heart.rr_ms,
        scale=scale,
        slope=slope,
        layout=str(rng.choice(style.layouts)),
        enhanced_cine=plan.vendor == "philips" and bool(rng.random() < 0.5),
        blank_descriptions=blank_descriptions,
        token=f"{rng.integers(16**8):08X}",
    )
    study_dir = out_dir / "studies" / plan.study_id
    if study_dir.exists():
        shutil.rmtree(study_dir)
    frames = write_exam(study_dir, exam, ctx, UIDSource(rng))
    planes = long_axis_truth(heart, exam)
    truth = {"study_id": plan.study_id, "vendor": plan.vendor, "frames": _anatomical_views(frames, planes),
             "septal_roll_deg": round(subject.septal_roll_deg, 1), "long_axis_planes": planes}
    (out_dir / "truth" / f"{plan.study_id}.json").write_text(json.dumps(truth))
    return {
        "study_id": plan.study_id,
        "patient_id": patient_id(seed, plan.patient_index),
        "impression": write_impression(subject, measurements, rng),
        "labels": {**{name: bool(subject.findings[name]) for name in FINDINGS}, "diagnosis": subject.diagnosis},
        "vendor": plan.vendor,
        "field_strength": field,
        "measurements": measurements,
        "cardiac_phases": {"n": heart.n_phases, "ed": heart.ed_phase, "es": heart.es_phase},
        "lge_pattern": subject.lge_pattern,
        "heart_rate_bpm": round(subject.heart_rate_bpm, 1),
        "size": size,
        # Only in an enriched cohort (make_cohort's `enrich`): the finding this patient was drawn to have.
        **({"enriched_for": plan.enriched_for} if plan.enriched_for else {}),
    }


def long_axis_truth(heart: Heart, exam) -> dict:
    """For each planned long-axis plane: the AHA walls it cuts in the phantom's anatomy and the view they imply."""
    planes = {}
    for series in exam.series:
        if series.view in LONG_AXIS_VIEWS and series.view not in planes:
            plane = series.frames[0].plane
            walls = heart.walls_cut(plane.centre(), plane.normal)
            planes[series.view] = {"walls": [list(w) for w in walls], "view": view_of_walls(walls)}
    return planes


def _anatomical_views(frames: list[dict], planes: dict) -> list[dict]:
    """Long-axis frames take the view their plane's anatomy implies; the planned one is kept beside it."""
    for frame in frames:
        if frame["view"] in planes:
            frame["planned_view"] = frame["view"]
            implied = planes[frame["view"]]["view"]
            frame["view"] = "other" if implied == "none" else implied
    return frames


def _make_study_star(args) -> dict:
    return make_study(*args)


def _check_args(n, seed, size, num_workers) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    get_protocol(size)
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
        raise ValueError(f"num_workers must be a positive integer or None, got {num_workers!r}")


def _pool_context():
    # fork avoids re-importing the package (and torch, which it pulls in) in every worker.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def make_cohort(out_dir, n: int, seed: int = 0, vendors=None, size: str = "small", num_workers: int | None = None,
                progress: bool = True, preview: bool = False, blank_descriptions: bool = False,
                extra_series=(), contrast: bool = True, enrich: float = 0.0) -> list[dict]:
    """Write `n` synthetic studies under `out_dir` and return their report records (see module doc).

    Studies and truth files of an earlier run into the same folder that are not part of this cohort
    are removed, so the folder always holds exactly the cohort that reports.jsonl describes.

    `vendors` restricts the vendor styles (default: siemens, ge, philips); `size` is 'small' (tests and
    the demo) or 'full' (scanner-like); `num_workers` processes (default: one per CPU); `preview` also
    writes `preview.png`, a montage of the first study (needs the `plot` extra); `blank_descriptions`
    empties SeriesDescription, ProtocolName and SequenceName so only geometry and timing are left.
    `extra_series` adds series a processor must set aside, any of `EXTRA_SERIES` ("t2w": black-blood T2
    STIR or TSE short-axis stack, "t2star": multi-echo, "tagging", "flow": phase-contrast magnitude and
    phase, "perfusion": first pass; "all": every one the study can have); they come from their own random stream, so the other series
    of a study are the same with or without them. `contrast=False` writes studies without contrast: no
    TI scout, no LGE (nor perfusion).

    `enrich` (0 to 1) is the share of patients drawn as cases of one finding, each finding as often: the
    patient comes from the cohort's distribution conditioned on having that finding (its diagnosis and
    co-occurring findings follow), as a case-control sample is enriched. The natural mix gives the rarest
    findings (RV and aortic dilation) a few percent of studies, too few for a small cohort to learn them or for
    its test split to measure them. The other patients are drawn as without it, and `enrich=0` draws nothing
    more (the same bytes as before); an enriched study's record names its finding (`enriched_for`).
    """
    _check_args(n, seed, size, num_workers)
    if not 0.0 <= enrich <= 1.0:
        raise ValueError(f"enrich must be between 0 and 1 (a share of patients), got {enrich!r}")
    if extra_series == "all":  # every extra the study can have: perfusion only with contrast
        extra_series = tuple(name for name in EXTRA_SERIES if contrast or name != "perfusion")
    extra_series = check_extras((extra_series,) if isinstance(extra_series, str) else extra_series, contrast)
    vendors = check_vendors(vendors)
    out_dir = Path(out_dir)
    plans = plan_cohort(int(n), int(seed), vendors, float(enrich))
    _remove_other_studies(out_dir, {plan.study_id for plan in plans})
    jobs = [(plan, int(seed), size, out_dir, blank_descriptions, extra_series, contrast) for plan in plans]
    workers = min(num_workers or os.cpu_count() or 1, len(jobs))
    records = _run(jobs, workers, progress)
    with open(out_dir / "reports.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    if preview:
        save_preview(out_dir / "studies" / plans[0].study_id, out_dir / "preview.png",
                     truth=out_dir / "truth" / f"{plans[0].study_id}.json")
    return records


def _remove_other_studies(out_dir: Path, keep: set) -> None:
    """Make `out_dir` hold exactly this cohort: drop studies and truth files an earlier run left behind."""
    (out_dir / "studies").mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)
    for path in (out_dir / "studies").iterdir():
        if re.fullmatch(r"SYN\d{5,}", path.name) and path.name not in keep:
            shutil.rmtree(path)
    for path in (out_dir / "truth").glob("SYN*.json"):
        if path.stem not in keep:
            path.unlink()


def _run(jobs: list, workers: int, progress: bool) -> list[dict]:
    bar = tqdm(total=len(jobs), desc="synthetic studies", unit="study", disable=not progress)
    if workers == 1:
        records = []
        for job in jobs:
            records.append(make_study(*job))
            bar.update()
    else:
        with _pool_context().Pool(workers) as pool:
            records = []
            for record in pool.imap_unordered(_make_study_star, jobs):
                records.append(record)
                bar.update()
        records.sort(key=lambda r: int(r["study_id"][3:]))
    bar.close()
    return records
