"""Synthetic patient identity for DICOM headers, and deterministic UIDs.

Every name, ID, birth date and accession number here is invented; they are in the headers so that
tests can prove no output of the package carries them (they never reach reports.jsonl or truth files).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

_GIVEN = ("ADA", "BRUNO", "CLARA", "DMITRI", "ELENA", "FARID", "GRETA", "HUGO", "INES", "JONAS", "KAITO", "LEILA",
          "MARCO", "NADIA", "OSKAR", "PRIYA", "QUENTIN", "ROSA", "SAMIR", "TILDA", "UMAR", "VERA", "WANJIRU",
          "XAVIER", "YUKI", "ZORAN")
_FAMILY = ("ABERNATHY", "BELCOURT", "CASTELLANO", "DRAXLER", "EKWUEME", "FONTAINE", "GALLOWAY", "HOLLOWAY",
           "IVANOVA", "JANSSEN", "KOWALCZYK", "LINDQVIST", "MORIYAMA", "NAKASHIMA-SYN", "OYELARAN", "PETROVSKI",
           "QUARTERMAINE", "RASMUSSEN", "SANTANGELO", "TREMBLAY", "UDOKA", "VASQUEZ", "WINTERBOTTOM", "YAMADA")


@dataclass(frozen=True)
class Identity:
    """A synthetic patient as a hospital's headers would show them."""

    name: str  # DICOM PN, FAMILY^GIVEN
    patient_id: str
    birth_date: str  # YYYYMMDD
    sex: str
    weight_kg: float
    height_m: float


def draw_identity(rng: np.random.Generator, sex: str, age_years: int, first_visit: dt.date) -> Identity:
    birth = first_visit - dt.timedelta(days=int(age_years * 365.25 + rng.integers(0, 365)))
    return Identity(
        name=f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}",
        patient_id=f"MRN{rng.integers(10**7, 10**8)}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=sex,
        weight_kg=round(float(rng.uniform(52.0, 105.0)), 1),
        height_m=round(float(rng.uniform(1.52, 1.95)), 2),
    )


def draw_visit_date(rng: np.random.Generator, after: dt.date | None = None) -> dt.date:
    if after is not None:
        return after + dt.timedelta(days=int(rng.integers(90, 900)))
    return dt.date(2016, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3000)))


def accession_number(rng: np.random.Generator) -> str:
    return f"ACC{rng.integers(10**8, 10**9)}"


class UIDSource:
    """Deterministic DICOM UIDs under the 2.25 (UUID-derived) root, drawn from a seeded generator."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng

    def __call__(self) -> str:
        value = int.from_bytes(self._rng.bytes(16), "big") | (1 << 120)  # never starts with a zero
        return f"2.25.{value}"
