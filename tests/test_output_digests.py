"""The synthetic cohort and the prepared corpus are byte-for-byte what they were before the speed work.

`tests/data/output_digests.json` was recorded with the code of main at 3a97b66, before synthesis and
preparation were made faster (`python tests/test_output_digests.py --record` run against that code): a
SHA-256 of every file the generator writes (DICOM headers and pixel data, truth files, reports.jsonl) and
of every corpus row `prepare` writes (frames, slots, metadata, impression, labels). Any change of
behaviour in either step, even one pixel or one header element, fails here. The corpus rows were recorded
again after one deliberate change, issue 16's default layout (the LGE short-axis stack takes 4 of 16
frames): only their frames, slots and metadata changed; the cohort's digests are still 3a97b66's. The identity `prepare` now
takes from its header pass is checked against the separate identity read it replaced.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cmr_clip.data.prepare import prepare
from cmr_clip.privacy import StudyIdentity
from cmr_clip.processing import CMRStudyProcessor, list_studies
from cmr_clip.processing.identity import read_identity
from cmr_clip.synthetic import make_cohort

DIGESTS = Path(__file__).parent / "data" / "output_digests.json"
SUNNYBROOK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sunnybrook" / "SCD0000301"
# seed 0: siemens, ge and philips, and a patient's follow-up study; seed 1: every extra series a study can have.
COHORTS = {"seed0": {"n": 4, "seed": 0}, "seed1_extras": {"n": 2, "seed": 1, "extra_series": "all"}}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cohort_digests(out: Path) -> dict:
    """Every file under the cohort folder, by its path relative to it."""
    return {path.relative_to(out).as_posix(): _sha(path.read_bytes())
            for path in sorted(out.rglob("*")) if path.is_file()}


def corpus_digests(corpus) -> dict:
    """Every row of every split: each column's value (frames and slots as their bytes, dtype and shape)."""
    digests = {}
    for split, rows in corpus.items():
        for row in rows.with_format("numpy"):
            values = {}
            for name, value in row.items():
                value = np.asarray(value)
                values[name] = _sha(value.tobytes() + str((value.dtype, value.shape)).encode())
            digests[f"{split}/{row['study_id']}"] = values
    return digests


def record_all(tmp: Path) -> dict:
    digests = {}
    for name, kwargs in COHORTS.items():
        make_cohort(tmp / name, size="small", num_workers=1, progress=False, **kwargs)
        digests[name] = cohort_digests(tmp / name)
    corpus = prepare(tmp / "seed0" / "studies", tmp / "seed0" / "reports.jsonl", tmp / "corpus",
                     processor=CMRStudyProcessor(num_frames=16, image_size=64), progress=False)
    digests["corpus"] = corpus_digests(corpus)
    return digests


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(DIGESTS.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("digests")


@pytest.fixture(scope="module")
def current(workdir) -> dict:
    return record_all(workdir)


@pytest.mark.parametrize("name", sorted(COHORTS))
def test_cohort_files_unchanged(recorded, current, name):
    assert sorted(current[name]) == sorted(recorded[name]), "the cohort writes other files than before"
    changed = [path for path in recorded[name] if current[name][path] != recorded[name][path]]
    assert not changed, f"{len(changed)} files differ from the recorded bytes, e.g. {changed[:5]}"


def test_corpus_rows_unchanged(recorded, current):
    assert current["corpus"] == recorded["corpus"]


def _identity_fields(identity: StudyIdentity) -> dict:
    return {name: getattr(identity, name) for name in ("names", "ids", "dates", "places", "phones")}


@pytest.mark.parametrize("source", ["synthetic", "sunnybrook"])
def test_header_pass_collects_the_identity_a_separate_read_finds(current, workdir, tmp_path, source):
    """`prepare` takes a study's identity from its header pass: it must be what `read_identity`'s own pass over
    every file finds, also from files the header pass sets aside (a non-image DICOM, a truncated one, junk)."""
    if source == "sunnybrook":
        study = SUNNYBROOK
        if not study.is_dir():
            pytest.skip("shared Sunnybrook data not available")
    else:
        study = tmp_path / "study"
        shutil.copytree(workdir / "seed0" / "studies" / "SYN00000", study)
        first = next(path for path in sorted(study.rglob("*")) if path.is_file())
        (study / "junk.dcm").write_bytes(b"not dicom at all")
        (study / "truncated.dcm").write_bytes(first.read_bytes()[:700])
        note = pydicom.dcmread(first, stop_before_pixels=True)
        for keyword in ("Rows", "Columns"):
            delattr(note, keyword)
        note.PatientName, note.OtherPatientIDs = "Roe^Jane", "MRN-4411"
        note.save_as(study / "note.dcm")
    collected = StudyIdentity()
    list_studies(study, identity=collected)
    expected = read_identity(study)
    assert collected and _identity_fields(collected) == _identity_fields(expected)
    if source == "synthetic":
        assert "Roe^Jane" in collected.names and "MRN-4411" in collected.ids


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        DIGESTS.write_text(json.dumps(record_all(Path(tmp)), indent=1, sort_keys=True) + "\n")
