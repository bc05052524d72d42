"""The header pass reads element values straight from their bytes (`headers.element_values`) instead of through
pydicom's value conversion. These tests hold it to pydicom itself, on files we never wrote: pydicom's own test
files (implicit and big-endian transfer syntaxes, enhanced MR, other vendors, character sets) and a real
scanner study."""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from cmr_clip.privacy import StudyIdentity
from cmr_clip.processing import headers
from cmr_clip.processing.sources import FileRef

SUNNYBROOK = Path(__file__).resolve().parents[2] / "shared" / "data" / "sunnybrook"


def _files() -> list[Path]:
    files = [Path(f) for f in get_testdata_files("*") if Path(f).is_file()]
    if SUNNYBROOK.is_dir():
        files += sorted(p for p in SUNNYBROOK.rglob("*") if p.is_file())[:120]
    return files


def _header_pass(files: list[Path]) -> list:
    """Every file's frames (all fields) and collected identity, or its error, as plain data."""
    results = []
    for index, path in enumerate(files):
        identity = StudyIdentity()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frames = headers._frames_of_file(FileRef(path=str(path), name=path.name, index=index), {}, b"salt", identity)
            results.append(([dataclasses.asdict(frame) for frame in frames], vars(identity)))
        except Exception as error:  # noqa: BLE001 - the error itself is compared
            results.append((type(error).__name__, str(error), vars(identity)))
    return results


def test_fast_values_give_the_same_frames_and_identity_as_pydicom_on_files_we_never_wrote(monkeypatch):
    files = _files()
    fast_answers = []
    original = headers.element_values

    def counting(ds, keyword):
        values = original(ds, keyword)
        fast_answers.append(values is not None)
        return values

    monkeypatch.setattr(headers, "element_values", counting)
    fast = _header_pass(files)
    monkeypatch.setattr(headers, "element_values", lambda ds, keyword: None)  # every value through pydicom
    slow = _header_pass(files)

    differing = [str(path.name) for path, a, b in zip(files, fast, slow) if a != b]
    assert not differing, f"fast header values differ from pydicom's for {differing}"
    assert sum(1 for r in fast if isinstance(r[0], list) and r[0]) >= 40, "too few image files read to compare"
    # the comparison means something only if the fast path answered most reads
    assert sum(fast_answers) > 0.8 * len(fast_answers)


def _dataset(transfer_syntax, **elements) -> Dataset:
    """A dataset written with `transfer_syntax` and read back, so that its elements are raw bytes again."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False, little_endian=transfer_syntax == ExplicitVRLittleEndian,
               implicit_vr=False)
    buffer.seek(0)
    return pydicom.dcmread(buffer, force=True)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_numbers_and_strings_read_from_bytes_in_either_byte_order(syntax):
    ds = _dataset(syntax, Rows=192, Columns=256, SmallestImagePixelValue=0, EchoTime="1.23 ",
                  PixelSpacing=["1.40625", "1.40625"], ImageType=["ORIGINAL", "PRIMARY", "M", "ND"],
                  SeriesDescription="cine_4ch ", NumberOfFrames="30")
    assert headers.element_values(ds, "Rows") == [192]
    assert headers._int(ds, "Columns") == 256
    assert headers._float(ds, "EchoTime") == pytest.approx(1.23)
    assert headers._vector(ds, "PixelSpacing", 2) == (1.40625, 1.40625)
    assert headers._image_type(ds, "ImageType") == ("ORIGINAL", "PRIMARY", "M", "ND")
    assert headers._text(ds, "SeriesDescription") == "cine_4ch"
    assert headers._int(ds, "NumberOfFrames") == 30
    assert headers.element_values(ds, "InversionTime") == []  # absent


def test_text_that_needs_its_character_set_is_left_to_pydicom():
    utf8 = _dataset(ExplicitVRLittleEndian, SpecificCharacterSet="ISO_IR 192", PatientName="Müller^Jürgen",
                    SeriesDescription="Kurzachse Cine")
    assert headers.element_values(utf8, "PatientName") is None  # bytes beyond ASCII: pydicom decodes
    assert headers.element_values(utf8, "SeriesDescription") == ["Kurzachse Cine"]
    identity = StudyIdentity()
    identity.add_header(headers.FastHeader(utf8))
    assert identity.names == {"Müller^Jürgen"}

    # ISO 2022 JIS text is 7-bit but switches character sets with escape sequences: also pydicom's to decode
    jis = Dataset()
    jis.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    jis.PatientName = "Yamada^Tarou=山田^太郎"
    buffer = io.BytesIO()
    jis.file_meta = FileMetaDataset()
    jis.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    jis.save_as(buffer, enforce_file_format=False, little_endian=True, implicit_vr=False)
    buffer.seek(0)
    read = pydicom.dcmread(buffer, force=True)
    assert b"\x1b" in read.get_item("PatientName").value
    assert headers.element_values(read, "PatientName") is None
    assert headers._text(read, "PatientName") == "Yamada^Tarou=山田^太郎"
