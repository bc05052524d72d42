"""Synthetic cardiac MRI cohorts: beating-heart phantoms with known findings, imaged as scanners image
them, written as vendor-style DICOM studies with impressions, labels and per-frame ground truth.

`make_cohort(out_dir, n, seed=...)` is the entry point; `cmr-clip synth` runs it from the shell.
"""

from ..vocabulary import DIAGNOSES, FINDINGS
from .cohort import make_cohort, make_study, plan_cohort
from .phantom import Heart, Tissue, measure
from .subject import THRESHOLDS, Subject, draw_subject
from .vendors import VENDORS

__all__ = [
    "DIAGNOSES",
    "FINDINGS",
    "THRESHOLDS",
    "VENDORS",
    "Heart",
    "Subject",
    "Tissue",
    "draw_subject",
    "make_cohort",
    "make_study",
    "measure",
    "plan_cohort",
]
