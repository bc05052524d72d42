"""Study boundaries: sources holding several studies, one patient per study, non-MR and non-cardiac sources.

Two synthetic studies of two different patients (the generator wrote each into its own folder; that
separation, not our grouping, is the ground truth) are put together three ways: one folder, one zip, one
DICOMDIR listing both. Which study a file belongs to is known from the generator's folders through each
file's SOPInstanceUID, read with pydicom; which study an output row came from is checked against the same
processor run on each study's own folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from transformers import BertTokenizer

import cmr_clip
from cmr_clip.data.prepare import prepare
from cmr_clip.processing import (
    CMRCLIPProcessor,
    CMRStudyProcessor,
    MixedPatientsError,
    MultipleStudiesError,
    NotAStudyError,
    NotCardiacMRError,
    list_studies,
    read_studies,
    read_study,
)
from cmr_clip.processing import reader as reader_module
from cmr_clip.processing.display import study_summary
from cmr_clip.synthetic import make_cohort
from processing_factory import write_study

SOURCES = ("folder", "zip", "dicomdir")
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two studies of two patients, each in its own folder, and what the generator knows about them."""
    root = tmp_path_factory.mktemp("two")
    records = make_cohort(root, 2, seed=0, progress=False, num_workers=1)
    assert records[0]["patient_id"] != records[1]["patient_id"]  # two patients, by the generator's own record
    studies = {}
    for record in records:
        folder = root / "studies" / record["study_id"]
        truth = json.loads((root / "truth" / f"{record['study_id']}.json").read_text())
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in _files(folder)]
        studies[record["study_id"]] = {
            "folder": folder,
            "n_frames": len(truth["frames"]),
            "sops": {ds.SOPInstanceUID for ds in headers},
            "identity": {str(ds.get(k)) for ds in headers for k in PHI_KEYWORDS if ds.get(k)},
        }
    return root, studies


@pytest.fixture(scope="module")
def sources(cohort, tmp_path_factory):
    """The two studies as one folder, one zip and one DICOMDIR (pydicom's FileSet, files renamed)."""
    root, studies = cohort
    out = tmp_path_factory.mktemp("mixed")
    archive = out / "both.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for study_id, info in studies.items():
            for path in _files(info["folder"]):
                zf.write(path, f"{study_id}/{path.relative_to(info['folder']).as_posix()}")
    fileset = FileSet()
    for info in studies.values():
        for path in _files(info["folder"]):
            fileset.add(pydicom.dcmread(path))
    _quiet(fileset.write, out / "media")
    return {"folder": root / "studies", "zip": archive, "dicomdir": out / "media"}


def _origin(frame, studies: dict) -> str:
    """Which study the generator wrote this frame's file for, from its SOPInstanceUID."""
    with frame.file.open() as handle:
        sop = pydicom.dcmread(handle, stop_before_pixels=True).SOPInstanceUID
    return next(study_id for study_id, info in studies.items() if sop in info["sops"])


@pytest.mark.parametrize("kind", SOURCES)
def test_read_study_refuses_a_mixed_source_with_a_usable_message(cohort, sources, kind):
    root, studies = cohort
    with pytest.raises(MultipleStudiesError) as caught:
        _quiet(read_study, sources[kind])
    message = str(caught.value)
    assert "2 studies" in message and "study=" in message and "read_studies()" in message
    lines = re.findall(r"study (\d+): key ([\w-]+), MR, \d+ series, (\d+) images", message)
    assert [int(index) for index, _, _ in lines] == [0, 1]
    assert sorted(int(images) for _, _, images in lines) == sorted(info["n_frames"] for info in studies.values())
    for info in studies.values():
        assert not any(value in message for value in info["identity"])
    assert "SYN0" not in message and str(sources[kind]) not in message  # no folder or archive names


@pytest.mark.parametrize("kind", SOURCES)
def test_read_studies_yields_each_study_whole_and_pure(cohort, sources, kind):
    _, studies = cohort
    read = list(_quiet(read_studies, sources[kind]))
    assert len(read) == 2 and read[0].key != read[1].key
    origins = []
    for study in read:
        frames = [frame for series in study.series for frame in series.frames]
        found = {_origin(frame, studies) for frame in frames[:: max(1, len(frames) // 40)]}
        assert len(found) == 1  # every sampled frame from one generated study
        origin = found.pop()
        assert len(frames) == studies[origin]["n_frames"]  # and all of that study
        assert study.find("cine", "sax") is not None
        origins.append(origin)
    assert sorted(origins) == sorted(studies)


def test_study_picks_by_index_uid_and_key_and_refuses_an_unknown_one(sources):
    first, second = _quiet(read_studies, sources["folder"])
    assert _quiet(read_study, sources["folder"], study=1).key == second.key
    assert _quiet(read_study, sources["folder"], study=first.study_instance_uid).key == first.key
    assert _quiet(read_study, sources["folder"], study=second.key).key == second.key
    with pytest.raises(NotAStudyError, match=r"study=7 names none of the source's 2 studies"):
        _quiet(read_study, sources["folder"], study=7)
    unknown_uid = "1.2.826.0.1.3680043.2.1125.99.4417730921"
    with pytest.raises(NotAStudyError, match=r"study=that UID names none") as raised:
        _quiet(read_study, sources["folder"], study=unknown_uid)
    assert unknown_uid not in str(raised.value)  # a UID leads back to the PACS record: not echoed


@pytest.fixture(scope="module")
def single_rows(cohort):
    """The processor's row for each study read from its own folder: the rows a mixed source must reproduce."""
    _, studies = cohort
    processor = CMRStudyProcessor(num_frames=8, image_size=32)
    return {study_id: _quiet(processor, str(info["folder"]))["pixel_values_videos"][0] for study_id, info in studies.items()}


@pytest.mark.parametrize("kind", SOURCES)
def test_processor_rows_never_mix_studies(sources, single_rows, kind):
    processor = CMRStudyProcessor(num_frames=8, image_size=32)
    with pytest.raises(MultipleStudiesError):
        _quiet(processor, str(sources[kind]))
    skipped = _quiet(processor, [str(sources[kind])], skip_errors=True)
    assert skipped["pixel_values_videos"].shape[0] == 0
    assert skipped["errors"][0]["index"] == 0 and skipped["errors"][0]["error"] == "MultipleStudiesError"

    out = _quiet(processor, [str(sources[kind])], expand_studies=True)
    assert out["pixel_values_videos"].shape == (2, 8, 3, 32, 32)
    metadata = out["study_metadata"]
    assert [m["index"] for m in metadata] == [0, 0] and [m["study_index"] for m in metadata] == [0, 1]
    assert metadata[0]["study"] != metadata[1]["study"]
    matches = [[study_id for study_id, row in single_rows.items() if torch.equal(video, row)] for video in out["pixel_values_videos"]]
    assert sorted(m[0] for m in matches if len(m) == 1) == sorted(single_rows)  # each row is one whole study

    picked = _quiet(processor, str(sources[kind]), study=1)["pixel_values_videos"][0]
    assert torch.equal(picked, out["pixel_values_videos"][1])


def test_pipelines_take_a_picked_study_and_refuse_a_mixed_path(sources, single_rows):
    """A Study object is accepted wherever a path is, so a picked study can go to the pipelines."""
    processor = CMRStudyProcessor(num_frames=8, image_size=32)
    studies = list(_quiet(read_studies, sources["zip"]))
    out = _quiet(processor, studies)
    assert [m["study"] for m in out["study_metadata"]] == [s.key for s in studies]
    from cmr_clip.pipelines.studies import study_inputs

    inputs = _quiet(study_inputs, studies[0], processor, "zero-shot-cmr")
    assert inputs["error"] == [None] and torch.equal(inputs["pixel_values_videos"][0], out["pixel_values_videos"][0])
    refused = _quiet(study_inputs, sources["zip"], processor, "zero-shot-cmr")
    assert refused["error"][0].startswith("MultipleStudiesError: the source holds 2 studies")


def test_text_and_study_processor_refuses_to_expand_studies_beside_texts(sources):
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "normal"])})
    processor = CMRCLIPProcessor(tokenizer=tokenizer, feature_extractor=CMRStudyProcessor(num_frames=8, image_size=32))
    with pytest.raises(ValueError, match="expand_studies cannot be used with text"):
        processor(text=["normal"], studies=[str(sources["zip"])], expand_studies=True)
    pairs = _quiet(processor, text=["normal"], studies=[str(sources["zip"])], study=0)
    assert pairs["input_ids"].shape[0] == pairs["pixel_values_videos"].shape[0] == 1


def test_prepare_writes_one_row_per_study_and_skips_an_unpicked_mixed_source(cohort, sources, tmp_path):
    _, studies = cohort
    studies_dir = tmp_path / "studies"
    studies_dir.mkdir()
    shutil.copy(sources["zip"], studies_dir / "worklist.zip")
    keys = [s.key for s in _quiet(read_studies, sources["zip"])]
    reports = tmp_path / "reports.jsonl"
    rows = [
        {"study_id": "visit-a", "source": "worklist", "study": 0, "impression": "Normal LV size and function."},
        {"study_id": "visit-b", "source": "worklist", "study": keys[1], "impression": "Dilated LV."},
        {"study_id": "visit-c", "source": "worklist", "impression": "Which study is this?"},
    ]
    reports.write_text("".join(json.dumps(row) + "\n" for row in rows))
    processor = CMRStudyProcessor(num_frames=8, image_size=32)
    corpus = _quiet(prepare, studies_dir, reports, tmp_path / "corpus", processor=processor,
                    val_fraction=0.0, test_fraction=0.0, progress=False)
    train = corpus["train"]
    assert sorted(train["study_id"]) == ["visit-a", "visit-b"]
    skipped = [json.loads(line) for line in (tmp_path / "corpus" / "skipped.jsonl").read_text().splitlines()]
    assert [(s["study_id"], s["error"]) for s in skipped] == [("visit-c", "MultipleStudiesError")]
    assert "study=" in skipped[0]["message"]
    # each row's frames are exactly one generated study's, compacted from that study's own folder
    own = {study_id: _quiet(processor.compact, str(info["folder"]))[0] for study_id, info in studies.items()}
    origins = []
    for row in train:
        frames = np.asarray(row["frames"])
        origins.append([study_id for study_id, expected in own.items() if np.array_equal(frames, expected)])
        assert json.loads(row["metadata"])["study"] in keys
    assert sorted(o[0] for o in origins if len(o) == 1) == sorted(studies)


def test_inspect_shows_each_study_of_a_mixed_source(sources, capsys):
    from cmr_clip.cli import main

    assert _quiet(main, ["inspect", str(sources["zip"]), "--num-frames", "8"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^=== study \d: key [\w-]+, MR, \d+ series, \d+ images ===$", out, re.M)) == 2
    assert out.count("Layout 'default' uses 8 frames") == 2
    assert _quiet(main, ["inspect", str(sources["zip"]), "--study", "1"]) == 0
    assert capsys.readouterr().out.count("=== study 1:") == 1


def test_one_study_uid_holding_two_patients_is_refused_without_naming_them(cohort, tmp_path):
    _, studies = cohort
    info = next(iter(studies.values()))
    copy = tmp_path / "study"
    shutil.copytree(info["folder"], copy)
    intruder = "PID-OTHER-4471"
    for path in _files(copy)[::5]:
        ds = pydicom.dcmread(path)
        ds.PatientID = intruder
        ds.save_as(path)
    with pytest.raises(MixedPatientsError, match="2 different patients") as caught:
        _quiet(read_study, copy)
    message = str(caught.value)
    assert intruder not in message and not any(value in message for value in info["identity"])
    assert "re-export" in message


def test_a_ct_only_source_is_refused_at_the_header_pass(tmp_path, monkeypatch):
    def no_classification(*args, **kwargs):
        raise AssertionError("a CT source must be refused before classification")

    monkeypatch.setattr(reader_module, "classify_series", no_classification)
    for name, modality in (("CT_small.dcm", "CT"), ("examples_palette.dcm", "US")):
        with pytest.raises(NotCardiacMRError, match=rf"holds {modality} images and no MR: cmr-clip reads cardiac MR"):
            _quiet(read_study, [get_testdata_file(name)])


def test_a_stray_ct_file_in_an_mr_study_is_set_aside_with_its_reason(tmp_path):
    folder = tmp_path / "study"
    write_study(folder, style="siemens", n_slices=3, n_phases=5, lax=("4ch",), localizer=False, repeat=False, seed=3)
    mr = pydicom.dcmread(_files(folder)[0], stop_before_pixels=True)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.StudyInstanceUID, ct.PatientID = mr.StudyInstanceUID, mr.PatientID
    ct.save_as(folder / "zz_scout_ct.dcm")
    study = _quiet(read_study, folder)
    reasons = {item.file.name: item.reason for item in study.skipped}
    assert reasons == {"zz_scout_ct.dcm": "not MR (modality CT): set aside"}
    assert all(item.name.startswith("file ") and "zz_scout" not in item.name for item in study.skipped)
    assert study.find("cine", "sax") is not None


@pytest.mark.parametrize("body_part,refused", [("BRAIN", True), ("HEAD", True), ("HEART", False), ("CHEST", False)])
def test_an_mr_of_another_body_part_is_refused(tmp_path, body_part, refused):
    folder = tmp_path / "study"
    write_study(folder, style="ge", n_slices=3, n_phases=5, lax=("4ch",), localizer=False, repeat=False, seed=4)
    for path in _files(folder):
        ds = pydicom.dcmread(path)
        ds.BodyPartExamined = body_part
        ds.save_as(path)
    if refused:
        with pytest.raises(NotCardiacMRError, match=rf"is an MR of {body_part} \(BodyPartExamined\), not a cardiac study"):
            _quiet(read_study, folder)
    else:
        assert _quiet(read_study, folder).find("cine", "sax") is not None


def test_nested_dicomdirs_on_one_medium_are_all_read(tmp_path):
    made = {}
    for name, seed in (("a", 5), ("b", 6)):
        made[name] = tmp_path / name
        write_study(made[name], style="siemens", n_slices=3, n_phases=5, lax=("4ch",), localizer=False, repeat=False, seed=seed)
    medium = tmp_path / "medium"
    for name, target in (("a", medium), ("b", medium / "extra" / "visit2")):  # a root DICOMDIR and one in a subfolder
        fileset = FileSet()
        for path in _files(made[name]):
            fileset.add(pydicom.dcmread(path))
        _quiet(fileset.write, target)
    shutil.copy(_files(made["b"])[0], medium / "extra" / "visit2" / "not_indexed.dcm")
    counts = sorted(sum(len(s.frames) for s in study.series) for study in _quiet(read_studies, medium))
    assert counts == sorted(len(_files(made[name])) for name in made)  # the unindexed copy is not read

    side_by_side = tmp_path / "side_by_side"  # several DICOMDIRs, none at the root
    shutil.copytree(medium / "extra" / "visit2", side_by_side / "cd2")
    shutil.copytree(medium, side_by_side / "cd1", ignore=shutil.ignore_patterns("extra"))
    assert len(list(_quiet(read_studies, side_by_side))) == 2


def test_study_key_is_a_short_hash_of_the_uid_and_exported(sources):
    study = next(_quiet(read_studies, sources["folder"]))
    digest = study.key.removeprefix("study-")
    assert study.key.startswith("study-") and digest == hashlib.sha256(study.study_instance_uid.encode()).hexdigest()[: len(digest)]
    assert 8 <= len(digest) <= 16 and study.study_instance_uid not in repr(study_summary(study))
    assert cmr_clip.read_studies is read_studies and cmr_clip.MultipleStudiesError is MultipleStudiesError
    assert [s.index for s in _quiet(list_studies, sources["folder"])] == [0, 1]
