"""The clinical vocabulary every layer speaks: findings, diagnoses, sequences and views.

Each term is a `(str, Enum)` member, so it compares equal to, hashes like and serialises as the plain
string already stored in saved layouts, study metadata, labels and prompt files (`Sequence.CINE == "cine"`,
`json.dumps(View.SAX) == '"sax"'`). The tuples below list the values in a fixed order, and the named
groups replace positional slices: `MODEL_SEQUENCES` (what a layout may draw from) and `CARDIAC_VIEWS`
(the named imaging planes) instead of `SEQUENCES[:2]` and `VIEWS[:-1]`.

This module imports nothing from the package: synthetic, processing, evaluation and the prompt sets all
import from here, and it sits below them.
"""

from __future__ import annotations

from enum import Enum


class _Term(str, Enum):
    """A vocabulary term that prints as its value (`f"{View.SAX}"` is "sax", on every Python version)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Finding(_Term):
    """The eight boolean findings a study is labelled with (the synthetic cohort's labels, the report
    extractor's vocabulary and the zero-shot prompt set's finding names)."""

    LV_DYSFUNCTION = "lv_dysfunction"  # reduced LV systolic function (LVEF below about 50 %)
    RV_DYSFUNCTION = "rv_dysfunction"  # reduced RV systolic function (RVEF below about 45 %)
    LV_DILATION = "lv_dilation"  # enlarged LV end-diastolic volume
    RV_DILATION = "rv_dilation"  # enlarged RV end-diastolic volume
    LV_HYPERTROPHY = "lv_hypertrophy"  # LV wall 13-15 mm or thicker
    LGE = "lge"  # late gadolinium enhancement: scar or fibrosis, any pattern
    AORTIC_DILATION = "aortic_dilation"  # aortic root or ascending aorta dilated
    PERICARDIAL_EFFUSION = "pericardial_effusion"  # fluid in the pericardial sac


class Diagnosis(_Term):
    """The study-level diagnosis a report may state."""

    NORMAL = "normal"
    ICM = "icm"  # ischaemic cardiomyopathy: subendocardial or transmural LGE in a coronary territory
    NICM = "nicm"  # non-ischaemic (dilated) cardiomyopathy: midwall or patchy LGE
    HCM = "hcm"  # hypertrophic cardiomyopathy: asymmetric septal hypertrophy, patchy LGE
    AMYLOIDOSIS = "amyloidosis"  # cardiac amyloidosis: diffuse subendocardial LGE, dark blood pool


class Sequence(_Term):
    """What a series shows, by how it was acquired."""

    CINE = "cine"  # bSSFP cine: the beating heart, 20-30 ECG-gated phases per slice
    LGE = "lge"  # late gadolinium enhancement (inversion recovery ~10 min after contrast): scar bright
    OTHER = "other"  # anything else (localizers, maps, perfusion, flow, T2, ...): recognised and set aside


class View(_Term):
    """The imaging plane of a series."""

    SAX = "sax"  # short axis: a stack of parallel slices across the LV, base to apex
    TWO_CHAMBER = "2ch"  # long axis through the LV and LA (anterior and inferior walls)
    THREE_CHAMBER = "3ch"  # long axis through the LV outflow tract and aortic valve
    FOUR_CHAMBER = "4ch"  # long axis through all four chambers (inferoseptal and anterolateral walls)
    LVOT = "lvot"  # an LV outflow tract plane named as such by the site
    OTHER = "other"  # a plane not (or not confidently) identified


FINDINGS: tuple[str, ...] = tuple(term.value for term in Finding)
DIAGNOSES: tuple[str, ...] = tuple(term.value for term in Diagnosis)
SEQUENCES: tuple[str, ...] = tuple(term.value for term in Sequence)
VIEWS: tuple[str, ...] = tuple(term.value for term in View)

# The sequences a model input is built from (everything but OTHER).
MODEL_SEQUENCES: tuple[str, ...] = (Sequence.CINE.value, Sequence.LGE.value)
# The named cardiac planes (everything but OTHER): what a layout entry may ask for.
CARDIAC_VIEWS: tuple[str, ...] = tuple(term.value for term in View if term is not View.OTHER)
# The long-axis planes, in the order the synthetic protocol acquires them (its random draws follow it).
LONG_AXIS_VIEWS: tuple[str, ...] = (View.TWO_CHAMBER.value, View.FOUR_CHAMBER.value, View.THREE_CHAMBER.value)

__all__ = [
    "CARDIAC_VIEWS",
    "DIAGNOSES",
    "Diagnosis",
    "FINDINGS",
    "Finding",
    "LONG_AXIS_VIEWS",
    "MODEL_SEQUENCES",
    "SEQUENCES",
    "Sequence",
    "VIEWS",
    "View",
]
