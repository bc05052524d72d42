"""read_study on small DICOM studies written by the test: sources, grouping, ordering, classification."""

from __future__ import annotations

import re
import shutil
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from cmr_clip.processing import NotAStudyError, read_study
from cmr_clip.processing.display import study_summary
from processing_factory import write_study


def classification_errors(study, truth: dict) -> list:
    """Frames whose series' (sequence, view), use, or (slice, phase) position disagrees with the truth."""
    where = {}
    for series in study.series:
        for s, slice_frames in enumerate(series.grid):
            for p, frame in enumerate(slice_frames):
                where[(frame.file.name, frame.frame_index)] = (series, s, p)
    errors = []
    for key, expected in truth.items():
        series, s, p = where[key]
        used = series.used and series.sequence != "other"
        should_be_used = expected["role"] in ("cine", "lge", "lge_psir")
        if (series.sequence, series.view) != (expected["sequence"], expected["view"]) or used != should_be_used:
            errors.append((key, expected, series.sequence, series.view, series.role))
        elif should_be_used and (s, p) != (expected["slice"], expected["phase"]):
            errors.append((key, expected, s, p))
    return errors


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    made = {}
    for style in ("siemens", "ge", "philips"):
        for blank in (False, True):
            folder = root / f"{style}-{'blank' if blank else 'named'}"
            made[(style, blank)] = (folder, write_study(folder, style=style, blank=blank, seed=len(made)))
    return made


@pytest.mark.parametrize("style", ["siemens", "ge", "philips"])
@pytest.mark.parametrize("blank", [False, True])
def test_every_frame_classified_and_ordered_as_written(studies, style, blank):
    folder, truth = studies[(style, blank)]
    study = read_study(folder)
    assert classification_errors(study, truth) == []


def test_ge_per_slice_series_merge_into_one_stack_and_earlier_repeat_is_set_aside(studies):
    folder, _ = studies[("ge", True)]
    study = read_study(folder)
    sax = study.find("cine", "sax")
    assert (sax.n_slices, sax.n_phases) == (5, 6)
    assert len(sax.series_instance_uids) == 5
    assert sax.series_instance_uid in sax.series_instance_uids
    repeats = [s for s in study.series if s.role == "repeat_discarded"]
    assert len(repeats) == 5 and all(not s.used for s in repeats)
    assert all(max(r.acquisition_order for r in repeats) < sax.acquisition_order for _ in [0])
    assert any("merged 5 parallel series" in reason for reason in sax.reasons)


def test_phases_follow_trigger_time_not_instance_number(studies):
    folder, _ = studies[("siemens", False)]
    sax = read_study(folder).find("cine", "sax")
    for slice_frames in sax.grid:
        triggers = [f.trigger_time for f in slice_frames]
        assert triggers == sorted(triggers)
        assert [f.instance_number for f in slice_frames] != sorted(f.instance_number for f in slice_frames) or len(slice_frames) < 3


def test_slices_run_base_to_apex_with_geometric_spacing(studies):
    folder, _ = studies[("philips", True)]
    sax = read_study(folder).find("cine", "sax")
    assert sax.slice_spacing == pytest.approx(8.0, abs=0.01)
    positions = np.array([sax.grid[s][0].position for s in range(sax.n_slices)])
    steps = np.diff(positions, axis=0)
    # base -> apex: towards the patient's left (+x), anterior (-y) and inferior (-z)
    assert np.all(steps @ np.array([1.0, -1.0, -1.0]) > 0)


def test_enhanced_multiframe_expands_into_frames(studies):
    folder, _ = studies[("philips", False)]
    sax = read_study(folder).find("cine", "sax")
    frames = sax.frames
    assert len(frames) == 30 and len({f.file.name for f in frames}) == 1
    assert sorted(f.frame_index for f in frames) == list(range(30))


def test_same_study_from_zip_file_list_and_dicomdir(studies, tmp_path):
    folder, truth = studies[("siemens", False)]
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    from_zip = read_study(archive)
    assert from_zip.find("cine", "sax").n_slices == 5
    assert {s.view for s in from_zip.series if s.sequence == "cine" and s.used} == {"sax", "2ch", "3ch", "4ch"}

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    from_list = read_study(files)
    assert classification_errors(from_list, truth) == []

    copy = tmp_path / "media"
    fileset = FileSet()
    for path in files:
        fileset.add(pydicom.dcmread(path))
    fileset.write(copy)
    (copy / "stray_not_in_index.dcm").write_bytes(files[0].read_bytes())
    from_dicomdir = read_study(copy)
    assert sum(len(s.frames) for s in from_dicomdir.series) == len(files)  # the stray file is not indexed


def test_broken_and_non_dicom_files_are_skipped_with_reasons(studies, tmp_path):
    folder, _ = studies[("siemens", False)]
    copy = tmp_path / "study"
    shutil.copytree(folder, copy)
    (copy / "notes.txt").write_text("not an image")
    victim = next(copy.rglob("*.dcm"))
    victim.write_bytes(victim.read_bytes()[:200])
    study = read_study(copy)
    reasons = {item.file.name: item.reason for item in study.skipped}
    assert "notes.txt" in reasons and "not a DICOM file" in reasons["notes.txt"]
    assert all(re.fullmatch(r"file \d+", item.name) for item in study.skipped)  # named by place, not by path
    assert victim.relative_to(copy).as_posix() in reasons
    assert study.find("cine", "sax") is not None


def test_empty_folder_is_not_a_study(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(NotAStudyError, match="no readable DICOM image"):
        read_study(tmp_path)


def test_overrides_by_description_pattern_and_by_uid(studies):
    folder, _ = studies[("siemens", False)]
    study = read_study(folder, overrides={"de_4ch": ("other", "other")})
    assert study.find("lge", "4ch") is None
    uid = read_study(folder).find("cine", "2ch").series_instance_uid
    study = read_study(folder, overrides={uid: {"view": "lvot"}})
    overridden = study.find("cine", "lvot")
    assert overridden is not None and overridden.series_instance_uid == uid and overridden.confidence == 1.0


def test_summary_is_readable_and_free_of_uids(studies):
    folder, _ = studies[("ge", False)]
    study = read_study(folder)
    text = study_summary(study)
    assert "cine/sax" in text and "merged from series" in text and "repeated acquisition" in text
    for series in study.series:
        for uid in series.series_instance_uids:
            assert uid not in text


def _write_series(root, number, planes, phases, study_uid, description="", **kwargs):
    from pydicom.uid import generate_uid

    from processing_factory import disc, write_image

    uid = generate_uid()
    for s, (position, orientation) in enumerate(planes):
        for p in range(phases):
            write_image(root / f"se{number}" / f"{s}_{p}.dcm", series_uid=uid, series_number=number, description=description,
                        study_uid=study_uid, position=position, orientation=orientation, instance=s * phases + p + 1,
                        pixels=disc(4), **({"trigger": 30.0 + 40 * p} | kwargs))
    return uid


def test_a_stack_split_over_two_series_is_merged_and_a_full_repeat_dropped(tmp_path):
    from processing_factory import sax_plane

    planes = [sax_plane(s, 6) for s in range(6)]
    _write_series(tmp_path, 3, planes, 6, "1.2.3")  # a first, complete attempt
    _write_series(tmp_path, 7, planes[:3], 6, "1.2.3")  # repeated as two halves
    _write_series(tmp_path, 8, planes[3:], 6, "1.2.3")
    study = read_study(tmp_path)
    sax = study.find("cine", "sax")
    assert (sax.n_slices, sax.n_phases) == (6, 6)
    assert sax.merged_series_numbers == [7, 8]
    assert [s.role for s in study.series if s.series_number == 3] == ["repeat_discarded"]


@pytest.mark.parametrize(
    "role, kwargs, phases",
    [
        ("flow", dict(image_type=("ORIGINAL", "PRIMARY", "P", "RETRO"), sequence_name="fl2d1r3_v150in"), 6),
        ("flow", dict(image_type=("ORIGINAL", "PRIMARY", "P", "ND")), 8),
        ("other", dict(image_type=("ORIGINAL", "PRIMARY", "P", "ND")), 1),
        ("map", dict(image_type=("DERIVED", "PRIMARY", "T1 MAP", "MOCO")), 1),
        ("secondary", dict(image_type=("DERIVED", "SECONDARY", "OTHER")), 1),
        ("perfusion", dict(trigger_times=[100.0] * 40), 40),
        ("ti_scout", dict(inversion_times=[100.0 + 25 * i for i in range(12)]), 12),
    ],
)
def test_other_series_are_recognised_without_descriptions(tmp_path, role, kwargs, phases):
    from pydicom.uid import generate_uid

    from processing_factory import disc, sax_plane, write_image

    position, orientation = sax_plane(2, 5)
    uid = generate_uid()
    triggers = kwargs.pop("trigger_times", [30.0 + 40 * p for p in range(phases)])
    inversions = kwargs.pop("inversion_times", [None] * phases)
    sequence_name = kwargs.pop("sequence_name", None)
    for p in range(phases):
        path = tmp_path / f"{p}.dcm"
        write_image(path, series_uid=uid, series_number=1, description="", study_uid="1.2.3", position=position,
                    orientation=orientation, instance=p + 1, pixels=disc(4), trigger=triggers[p], inversion=inversions[p], **kwargs)
        if sequence_name:
            ds = pydicom.dcmread(path)
            ds.SequenceName = sequence_name
            ds.save_as(path)
    (series,) = read_study(tmp_path).series
    assert (series.role, series.sequence, series.view) == (role, "other", "other"), series.reasons


def test_parallel_header_pass_matches_serial(studies, monkeypatch):
    from cmr_clip.processing import headers

    folder, truth = studies[("ge", True)]
    monkeypatch.setattr(headers, "PARALLEL_MIN_FILES", 10)
    study = read_study(folder, num_workers=2)
    assert classification_errors(study, truth) == []


def test_a_frame_without_position_is_set_apart_and_the_stack_stays_ordered(studies, tmp_path):
    folder, truth = studies[("siemens", True)]
    copy = tmp_path / "study"
    shutil.copytree(folder, copy)
    damaged = next(k for k, v in truth.items() if v["role"] == "cine" and v["view"] == "sax" and (v["slice"], v["phase"]) == (2, 3))
    ds = pydicom.dcmread(copy / damaged[0])
    del ds.ImagePositionPatient
    ds.save_as(copy / damaged[0])
    study = read_study(copy)
    sax = study.find("cine", "sax")
    assert [len(frames) for frames in sax.grid] == [6, 6, 5, 6, 6]
    assert any("uneven phases per slice" in reason for reason in sax.reasons)
    apart = [s for s in study.series if any(f.file.name == damaged[0] for f in s.frames)]
    assert apart and apart[0] is not sax and not (apart[0].used and apart[0].sequence == "cine" and apart[0].view == "sax")
    assert [f.trigger_time for f in sax.grid[2]] == sorted(f.trigger_time for f in sax.grid[2])


def test_named_views_anchor_a_heart_turned_far_from_the_prior(tmp_path, monkeypatch):
    import processing_factory

    turned = {view: angle + 55.0 for view, angle in processing_factory.LAX_ANGLES.items()}
    monkeypatch.setattr(processing_factory, "LAX_ANGLES", turned)
    truth = write_study(tmp_path, style="siemens", n_slices=4, n_phases=6, repeat=False, localizer=False)
    assert classification_errors(read_study(tmp_path), truth) == []


def test_without_anatomy_to_check_it_a_description_names_the_view(studies, tmp_path):
    """The disc images show no ventricles: the description is the only evidence left, and the reasons say so.
    (A description the anatomy contradicts: test_processing_lax_views.)"""
    folder, truth = studies[("siemens", False)]
    copy = tmp_path / "study"
    shutil.copytree(folder, copy)
    for (path, _), expected in truth.items():
        if expected["sequence"] == "cine" and expected["view"] == "4ch":
            ds = pydicom.dcmread(copy / path)
            ds.SeriesDescription = "cine_2ch"  # a mislabelled 4-chamber series
            ds.save_as(copy / path)
    relabelled = next(s for s in read_study(copy).series if s.description == "cine_2ch" and s.sequence == "cine")
    assert relabelled.view == "2ch"
    assert any(r.startswith("long-axis plane: view not placed: ") for r in relabelled.reasons), relabelled.reasons
