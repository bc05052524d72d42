"""Hostile input: pydicom's own test files and hundreds of damaged copies of a study.

Everything must either work or raise a `CMRStudyError` (never an untyped exception), and a damaged file
must cost only itself.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

from cmr_clip.processing import (
    CMRStudyError,
    CMRStudyProcessor,
    MultipleStudiesError,
    NotCardiacMRError,
    UnsupportedCompressionError,
    list_studies,
    read_study,
)
from cmr_clip.processing.pixels import decode_frame
from processing_factory import write_study

N_VARIANTS = 240
IMPORTANT_TAGS = [
    "ImagePositionPatient", "ImageOrientationPatient", "TriggerTime", "SeriesInstanceUID", "Rows", "Columns",
    "PixelSpacing", "BitsAllocated", "PixelRepresentation", "SamplesPerPixel", "PixelData", "InversionTime",
    "PhotometricInterpretation", "SeriesNumber", "InstanceNumber", "ImageType",
]


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def _typed_or_ok(function, *args, **kwargs):
    try:
        return _quiet(function, *args, **kwargs)
    except CMRStudyError:
        return None


def test_every_pydicom_test_file_reads_or_fails_typed():
    files = [f for f in get_testdata_files() if not f.endswith((".py", ".json", ".txt"))]
    assert len(files) > 100
    decoded = unsupported = 0
    for path in files:
        study = _typed_or_ok(read_study, [path])
        if study is None:
            continue
        for series in study.series:
            try:
                _quiet(decode_frame, series.first_frame)
                decoded += 1
            except UnsupportedCompressionError as error:
                assert "cmr-clip[dicom-codecs]" in str(error) or "no decoder exists" in str(error)
                unsupported += 1
            except CMRStudyError:
                pass
    assert decoded > 20  # uncompressed, big endian, RLE, baseline JPEG, deflated ... do decode


def test_the_whole_test_data_folder_is_many_studies_each_read_or_refused_typed():
    folder = Path(get_testdata_files("CT_small.dcm")[0]).parent
    with pytest.raises(MultipleStudiesError, match=r"holds \d+ studies.*study=") as caught:
        _quiet(read_study, folder)
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", str(caught.value))  # no UIDs listed
    outcomes = {"read": 0, "not cardiac MR": 0, "other typed": 0}
    for part in _quiet(list_studies, folder):
        try:
            study = _quiet(part.read)
            assert study.series and all(item.reason for item in study.skipped)
            outcomes["read"] += 1
        except NotCardiacMRError as error:
            assert "MR" not in part.modalities or "BodyPartExamined" in str(error)
            outcomes["not cardiac MR"] += 1
        except CMRStudyError:
            outcomes["other typed"] += 1
    assert outcomes["read"] >= 3 and outcomes["not cardiac MR"] >= 10, outcomes


def _mutate(data: bytes, rng: random.Random, path: Path) -> bytes:
    kind = rng.choice(["truncate", "flip", "delete"])
    if kind == "truncate":
        return data[: rng.randrange(0, len(data))]
    if kind == "flip":
        buffer = bytearray(data)
        for _ in range(rng.randint(1, 40)):
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        return bytes(buffer)
    ds = pydicom.dcmread(path)
    for keyword in rng.sample(IMPORTANT_TAGS, rng.randint(1, 3)):
        if keyword in ds:
            delattr(ds, keyword)
    from io import BytesIO

    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "study"
    write_study(root, style="siemens", n_slices=3, n_phases=5, lax=("4ch",), localizer=False, repeat=False, seed=7)
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_damaged_copies_raise_only_typed_errors_or_succeed(small_study, tmp_path):
    rng = random.Random(1234)
    processor = CMRStudyProcessor(num_frames=8, image_size=16)
    outcomes = {"ok": 0, "typed": 0, "set aside": 0}
    for variant in range(N_VARIANTS):
        files = list(small_study)
        damaged = []
        for index in rng.sample(range(len(files)), rng.randint(1, 3)):
            target = tmp_path / f"v{variant}_{index}.dcm"
            target.write_bytes(_mutate(files[index].read_bytes(), rng, files[index]))
            files[index] = target
            damaged.append(target.name)
        try:
            study = _quiet(read_study, files)
            read = {Path(f.file.name).name for s in study.series for f in s.frames}
            skipped = {Path(item.file.name).name for item in study.skipped if item.file is not None}
            assert all(name in read | skipped for name in damaged)  # every damaged file accounted for
            outcomes["set aside"] += sum(name in skipped for name in damaged)
            out = _quiet(processor, study)
            assert out["pixel_values_videos"].shape == (1, 8, 3, 16, 16)
            outcomes["ok"] += 1
        except CMRStudyError:
            outcomes["typed"] += 1
    # a damaged file costs only itself: nearly every variant still gives a video, the bad files set aside
    assert outcomes["ok"] >= 0.9 * N_VARIANTS and outcomes["set aside"] > N_VARIANTS // 2, outcomes


def test_a_series_with_no_decodable_frame_is_set_aside_and_its_view_counts_as_missing(tmp_path):
    folder = tmp_path / "study"
    write_study(folder, style="siemens", n_slices=3, n_phases=5, lax=("4ch",), localizer=False, repeat=False, seed=11)
    lge_sax = [p for p in sorted(folder.rglob("*")) if p.is_file() and pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription == "de_sax"]
    lge_number = pydicom.dcmread(lge_sax[0], stop_before_pixels=True).SeriesNumber
    for path in lge_sax:
        path.write_bytes(path.read_bytes()[:-1000])
    processor = CMRStudyProcessor(num_frames=8, image_size=16)
    for metadata in (_quiet(processor, str(folder))["study_metadata"][0], _quiet(processor.compact, str(folder))[2]):
        assert "lge/sax" in metadata["missing_views"]
        assert f"series {lge_number} set aside: no frame's pixel data can be decoded" in metadata["warnings"]
        assert all(f["entry"] != "lge/sax" for f in metadata["frames_used"])
        assert {f["entry"] for f in metadata["frames_used"]} >= {"cine/sax", "lge/4ch"}
