"""The header pass: every file read without its pixel data, each image frame turned into a `Frame`.

Headers are not trusted: every attribute goes through a parser that returns None for a missing or
malformed value, and a file whose header cannot be read at all is set aside with the reason. Enhanced MR
multi-frame files are expanded into one `Frame` per frame, with that frame's geometry and timing from the
per-frame (or shared) functional groups. Patient identity is never copied out of a header: PatientID is
only compared, through a hash salted afresh for every header pass, to check that a study holds one patient.
A file whose header is sound but whose uncompressed pixel data is too short keeps its place in its series,
marked with `pixel_problem`, so that decoding can put a neighbouring frame in its place.
"""

from __future__ import annotations

import hashlib
import html
import io
import math
import os
import re
import struct
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Callable

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.valuerep import PersonName

from ..privacy import IDENTITY_KEYWORDS, StudyIdentity, frame_label, without_path
from .sources import FileRef

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
# Below this many files a process pool costs more than it saves; on 2 cores it never paid in our measurements.
PARALLEL_MIN_FILES = 400
PARALLEL_MIN_CPUS = 4
# What a decoder needs besides Rows and Columns.
PIXEL_DESCRIPTION = ("BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation")
# A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters. Anything else is a damaged header.
_VALID_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
PATIENT_HASH_CHARS = 16


@dataclass(repr=False)
class Frame:
    """One 2D image: where its pixels are, its geometry and timing, and the series-level header fields.

    Printed by its place in the study (`label`: series, instance, frame), never by path or UID."""

    file: FileRef
    frame_index: int | None
    series_instance_uid: str
    series_number: int | None
    description: str
    protocol_name: str
    sequence_name: str
    scanning_sequence: str
    sequence_variant: str
    image_type: tuple[str, ...]
    sop_class_uid: str
    manufacturer: str
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    slice_location: float | None
    trigger_time: float | None
    inversion_time: float | None
    temporal_index: int | None
    cardiac_images: int | None
    acquisition_time: float | None
    series_time: float | None
    transfer_syntax: str
    complex_component: str
    rescale_slope: float
    rescale_intercept: float
    photometric: str
    study_instance_uid: str = ""
    modality: str = ""
    body_part: str = ""
    patient_hash: str | None = None
    pixel_problem: str | None = None
    # acquisition fields that tell sequences apart (classification); None where the header lacks them
    echo_time: float | None = None
    echo_train_length: int | None = None
    field_strength: float | None = None
    contrast_agent: str = ""
    tagging: str = ""

    @property
    def label(self) -> str:
        return frame_label(self.series_number, self.instance_number, self.frame_index, self.file.index)

    def __repr__(self) -> str:
        return f"Frame({self.label}, {self.rows}x{self.columns})"

    def _repr_html_(self) -> str:
        return html.escape(repr(self))


@dataclass(frozen=True)
class SkippedFile:
    """A file set aside by the header pass, and why: `name` is its place in the study (`file 12`), never its path;
    `file` (not printed) points at it for code that needs it."""

    name: str
    reason: str
    file: FileRef | None = field(default=None, repr=False, compare=False)


def scan_headers(refs: list[FileRef], num_workers: int | None = None,
                 identity: StudyIdentity | None = None) -> tuple[list[Frame], list[SkippedFile]]:
    """Header pass over `refs`, in a process pool when there are enough files and cores for it to pay.

    `num_workers` None picks automatically (a pool of up to 8 processes on machines with 4 or more cores).
    `identity`, when given, collects the patient identity of every file, as `processing.identity.read_identity`
    would, from the headers this pass reads anyway.
    """
    cpus = os.cpu_count() or 1
    workers = num_workers if num_workers is not None else (min(8, cpus) if cpus >= PARALLEL_MIN_CPUS else 1)
    salt = new_salt()
    if workers <= 1 or len(refs) < PARALLEL_MIN_FILES:
        return _scan_chunk(refs, salt, identity)[:2]
    chunks = [refs[i::workers] for i in range(workers)]
    frames, skipped = [], []
    collect = StudyIdentity() if identity is not None else None
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for chunk_frames, chunk_skipped, chunk_identity in pool.map(partial(_scan_chunk, salt=salt, identity=collect), chunks):
            frames.extend(chunk_frames)
            skipped.extend(chunk_skipped)
            if identity is not None:
                identity.update(chunk_identity)
    return frames, skipped


def _scan_chunk(refs: list[FileRef], salt: bytes,
                identity: StudyIdentity | None) -> tuple[list[Frame], list[SkippedFile], StudyIdentity | None]:
    archives: dict[str, zipfile.ZipFile] = {}
    # An identity-only read may still succeed where the full one failed.
    unreadable = None if identity is None else partial(add_file_identity, identity=identity)
    try:
        frames, skipped = scan_each(refs, partial(_frames_of_file, archives=archives, salt=salt, identity=identity),
                                    unreadable)
    finally:
        for archive in archives.values():
            archive.close()
    return frames, skipped, identity


def scan_each(refs: list, frames_of: Callable,
              unreadable: Callable | None = None) -> tuple[list[Frame], list[SkippedFile]]:
    """`frames_of(ref)` for every ref, setting aside (with the reason) each whose header is not a usable image;
    `unreadable(ref)` is called for each whose header could not be parsed at all."""
    frames, skipped = [], []
    for ref in refs:
        try:
            frames.extend(frames_of(ref))
        except SkipFile as reason:
            skipped.append(SkippedFile(ref.label, str(reason), ref))
        except ImportError:  # a missing package (pydicom, for remote code) is not a bad header: say what to install
            raise
        except Exception as error:  # never trust a header: any parse failure sets the file aside
            detail = without_path(str(error), ref.path, ref.name, ref.member)
            skipped.append(SkippedFile(ref.label, f"unreadable header ({type(error).__name__}: {detail})", ref))
            if unreadable is not None:
                unreadable(ref)
    return frames, skipped


def new_salt() -> bytes:
    """A salt for one header pass: patient hashes compare within that pass only."""
    return os.urandom(16)


class SkipFile(Exception):
    """A file that is readable but not an image we use."""


def _read_header(ref: FileRef, archives: dict[str, zipfile.ZipFile],
                 identity: StudyIdentity | None) -> tuple[pydicom.Dataset, int]:
    """The header and how many bytes of the file follow it (where the pixel data should be); the header's
    identity fields go into `identity` (when given), also for a file then set aside."""
    if ref.member is not None:
        if ref.path not in archives:
            archives[ref.path] = zipfile.ZipFile(ref.path)
        handle = io.BytesIO(archives[ref.path].read(ref.member))
    else:
        handle = open(ref.path, "rb")
    with handle:
        size = handle.seek(0, io.SEEK_END)
        handle.seek(0)
        try:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
        except InvalidDicomError:
            handle.seek(0)
            # DICOM without the 128-byte preamble exists in the wild; accept it only if it looks like an image.
            ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
            if identity is not None:
                identity.add_header(FastHeader(ds))
            if "Rows" not in ds or ("SOPClassUID" not in ds and "SeriesInstanceUID" not in ds):
                raise SkipFile("not a DICOM file")
            return ds, size - handle.tell()
        if identity is not None:
            identity.add_header(FastHeader(ds))
        return ds, size - handle.tell()


def _frames_of_file(ref: FileRef, archives: dict[str, zipfile.ZipFile], salt: bytes,
                    identity: StudyIdentity | None) -> list[Frame]:
    ds, remaining = _read_header(ref, archives, identity)
    return frames_of_header(ref, ds, remaining, salt)


def frames_of_header(ref: FileRef, ds: pydicom.Dataset, remaining: int | None, salt: bytes) -> list[Frame]:
    """The frames one header describes; `remaining` is how many bytes follow the header in its file (None when
    the pixel data are fetched elsewhere, as over DICOMweb, and cannot be checked here). Raises `SkipFile` for a
    header that is readable but not an image we use."""
    sop_class = _text(ds, "SOPClassUID")
    if sop_class == DIRECTORY_SOP_CLASS:
        raise SkipFile("DICOMDIR index, not an image")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not columns:
        raise SkipFile(f"no image (SOP class {sop_class or 'missing'}: no Rows/Columns)")
    missing = [k for k in PIXEL_DESCRIPTION if k not in ds]
    if missing:
        raise SkipFile(f"pixel data cannot be decoded: {', '.join(missing)} missing")
    n_frames = _int(ds, "NumberOfFrames") or 1
    problem = None if remaining is None else _pixel_length_problem(ds, rows * columns, remaining)
    base = {**_common_fields(ref, ds, salt), "pixel_problem": problem}
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(base, ds, n_frames)
    return [Frame(**base, frame_index=None if n_frames == 1 else i, **_classic_frame_fields(ds)) for i in range(n_frames)]


def _pixel_length_problem(ds: pydicom.Dataset, pixels_per_frame: int, remaining: int) -> str | None:
    """Why uncompressed pixel data cannot be decoded (shorter than the header promises: a truncated file), or None."""
    meta = getattr(ds, "file_meta", None)
    syntax = pydicom.uid.UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else None
    if syntax is not None and syntax.is_transfer_syntax and (syntax.is_compressed or syntax.is_deflated):
        return None
    bits = _int(ds, "BitsAllocated") or 0
    expected = pixels_per_frame * (_int(ds, "SamplesPerPixel") or 1) * (_int(ds, "NumberOfFrames") or 1) * bits // 8
    if remaining <= 0 or remaining < expected:
        return f"pixel data truncated: {max(remaining, 0)} bytes left for {expected} expected"
    return None


def _common_fields(ref: FileRef, ds: pydicom.Dataset, salt: bytes) -> dict:
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return dict(
        file=ref,
        study_instance_uid=_uid(ds, "StudyInstanceUID"),
        modality=_text(ds, "Modality").upper(),
        body_part=_text(ds, "BodyPartExamined").upper(),
        patient_hash=_patient_hash(ds, salt),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        series_number=_int(ds, "SeriesNumber"),
        description=_text(ds, "SeriesDescription"),
        protocol_name=_text(ds, "ProtocolName"),
        sequence_name=_text(ds, "SequenceName") or _text(ds, "PulseSequenceName"),
        scanning_sequence=_joined(ds, "ScanningSequence"),
        sequence_variant=_joined(ds, "SequenceVariant"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        manufacturer=_text(ds, "Manufacturer"),
        instance_number=_int(ds, "InstanceNumber"),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        cardiac_images=_int(ds, "CardiacNumberOfImages"),
        acquisition_time=_time(ds, "AcquisitionTime"),
        series_time=_time(ds, "SeriesTime"),
        transfer_syntax=transfer_syntax,
        photometric=_text(ds, "PhotometricInterpretation") or "MONOCHROME2",
        echo_train_length=_int(ds, "EchoTrainLength"),
        field_strength=_float(ds, "MagneticFieldStrength"),
        contrast_agent=_text(ds, "ContrastBolusAgent"),
        tagging=_text(ds, "Tagging").upper(),
    )


def _classic_frame_fields(ds: pydicom.Dataset) -> dict:
    return dict(
        image_type=_image_type(ds, "ImageType"),
        position=_vector(ds, "ImagePositionPatient", 3),
        orientation=_orientation(ds),
        pixel_spacing=_vector(ds, "PixelSpacing", 2),
        slice_location=_float(ds, "SliceLocation"),
        trigger_time=_float(ds, "TriggerTime"),
        inversion_time=_float(ds, "InversionTime"),
        echo_time=_float(ds, "EchoTime"),
        temporal_index=_int(ds, "TemporalPositionIdentifier"),
        complex_component=_text(ds, "ComplexImageComponent").upper(),
        rescale_slope=_float(ds, "RescaleSlope") or 1.0,
        rescale_intercept=_float(ds, "RescaleIntercept") or 0.0,
    )


def _enhanced_frames(base: dict, ds: pydicom.Dataset, n_frames: int) -> list[Frame]:
    """One `Frame` per frame; functional-group values win over the top-level (classic) attributes."""
    classic = _classic_frame_fields(ds)
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = list(ds.PerFrameFunctionalGroupsSequence)
    if len(per_frame) != n_frames:
        raise SkipFile(f"multi-frame file lists {len(per_frame)} per-frame groups for {n_frames} frames")
    frames = []
    for index, groups in enumerate(per_frame):
        found = {key: value for key, value in _functional_group_fields(groups, shared).items() if value is not None}
        frames.append(Frame(**base, frame_index=index if n_frames > 1 else None, **{**classic, **found}))
    return frames


def _functional_group_fields(groups, shared) -> dict:
    def lookup(sequence: str, keyword: str, reader, *args):
        for source in (groups, shared):
            item = _first_item(source, sequence) if source is not None else None
            if item is not None and keyword in item:
                value = reader(item, keyword, *args)
                if value is not None and value != "" and value != ():
                    return value
        return None

    content = _first_item(groups, "FrameContentSequence")
    component = lookup("MRImageFrameTypeSequence", "ComplexImageComponent", _text)
    return dict(
        image_type=lookup("MRImageFrameTypeSequence", "FrameType", _image_type),
        position=lookup("PlanePositionSequence", "ImagePositionPatient", _vector, 3),
        orientation=_valid_orientation(lookup("PlaneOrientationSequence", "ImageOrientationPatient", _vector, 6)),
        pixel_spacing=lookup("PixelMeasuresSequence", "PixelSpacing", _vector, 2),
        trigger_time=lookup("CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime", _float),
        inversion_time=lookup("MRModifierSequence", "InversionTimes", _float)
        or lookup("MRTimingAndRelatedParametersSequence", "InversionTime", _float),
        echo_time=lookup("MREchoSequence", "EffectiveEchoTime", _float),
        temporal_index=_int(content, "TemporalPositionIndex") if content is not None else None,
        complex_component=component.upper() if component else None,
        rescale_slope=lookup("PixelValueTransformationSequence", "RescaleSlope", _float),
        rescale_intercept=lookup("PixelValueTransformationSequence", "RescaleIntercept", _float),
    )


# --- defensive attribute parsers: a malformed value reads as missing ---------------------------------------


def _first_item(ds, keyword: str):
    try:
        sequence = ds.get(keyword)
        return sequence[0] if sequence else None
    except Exception:
        return None


# Value representations read without pydicom's value conversion (see `element_values`): strings split at
# backslashes (the multi-valued ones), and binary numbers by struct code.
_SPLIT_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"})
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}


@lru_cache(maxsize=None)
def _tag(keyword: str) -> int | None:
    return tag_for_keyword(keyword)


def element_values(ds, keyword: str) -> list | None:
    """The values of `keyword` in `ds` straight from the element's bytes, as a list of `str` (text VRs) or numbers
    (binary VRs); [] when the element is missing or empty. None when the fast path does not apply (an element
    pydicom has already converted, a sequence or other VR, text with bytes beyond ASCII or an ISO 2022 escape,
    where the character set matters): the caller then asks pydicom.

    The header pass reads some 80 attributes from each of thousands of files; pydicom's conversion (value
    objects, validation, character sets) was about half of its time. Values are stripped of the padding DICOM
    allows (trailing spaces and NULs); the readers below parse numbers from the strings as pydicom would.
    """
    tag = _tag(keyword)
    if tag is None:
        return None
    try:
        element = ds.get_item(tag)
    except Exception:  # noqa: BLE001 - a damaged element: let the caller's pydicom path report it as missing
        return None
    if element is None:
        return []
    if not isinstance(element, RawDataElement):
        return None
    vr = element.VR or dictionary_VR(tag)
    raw = element.value
    if raw is None or len(raw) == 0:
        return []
    if vr in _SPLIT_TEXT_VRS or vr in _SINGLE_TEXT_VRS:
        if not raw.isascii() or b"\x1b" in raw:
            return None
        text = raw.decode("ascii").rstrip("\x00 ")
        if not text:
            return []
        return text.split("\\") if vr in _SPLIT_TEXT_VRS else [text]
    code = _BINARY_VRS.get(vr)
    if code is None:
        return None
    size = struct.calcsize(code)
    if len(raw) % size:
        return None
    return list(struct.unpack(f"{'<' if element.is_little_endian else '>'}{len(raw) // size}{code}", raw))


class FastHeader:
    """A read-only view of a pydicom Dataset whose `get(keyword)` answers from `element_values` where it can
    (for `StudyIdentity.add_header`, which reads some 40 identity attributes of every header)."""

    __slots__ = ("ds",)

    def __init__(self, ds):
        self.ds = ds

    def get(self, keyword: str, default=None):
        values = element_values(self.ds, keyword)
        if values is None:
            return self.ds.get(keyword, default)
        return values if values else default


def _values(ds, keyword: str) -> list:
    fast = element_values(ds, keyword)
    if fast is not None:
        return fast
    try:
        value = ds.get(keyword)
    except Exception:
        return []
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes, int, float, PersonName)):  # a PersonName iterates over its characters
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _text(ds, keyword: str) -> str:
    values = _values(ds, keyword)
    if not values:
        return ""
    return "\\".join(str(v) for v in values).strip()


def _uid(ds, keyword: str) -> str:
    """A UID, or "" when it is missing or not a well-formed UID (a damaged header must not open a study of its own)."""
    text = _text(ds, keyword)
    return text if len(text) <= 64 and _VALID_UID.fullmatch(text) else ""


def _patient_hash(ds, salt: bytes) -> str | None:
    """A salted, truncated SHA-256 of PatientID, or None without one; the raw value is never kept."""
    patient = _text(ds, "PatientID")
    if not patient:
        return None
    return hashlib.sha256(salt + patient.encode("utf-8", "replace")).hexdigest()[:PATIENT_HASH_CHARS]


def _joined(ds, keyword: str) -> str:
    return "\\".join(str(v).strip().upper() for v in _values(ds, keyword))


def _image_type(ds, keyword: str) -> tuple[str, ...]:
    return tuple(str(v).strip().upper() for v in _values(ds, keyword))


def _float(ds, keyword: str) -> float | None:
    values = _values(ds, keyword)
    if not values:
        return None
    try:
        number = float(values[0])
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(ds, keyword: str) -> int | None:
    number = _float(ds, keyword)
    return int(number) if number is not None and abs(number) < 2**31 else None


def _vector(ds, keyword: str, length: int) -> tuple[float, ...] | None:
    values = _values(ds, keyword)
    if len(values) != length:
        return None
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return numbers if all(math.isfinite(n) for n in numbers) else None


def _orientation(ds) -> tuple[float, ...] | None:
    return _valid_orientation(_vector(ds, "ImageOrientationPatient", 6))


def _valid_orientation(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """Row and column cosines, renormalised; None if they are degenerate or not near-orthogonal."""
    if values is None:
        return None
    row, col = values[:3], values[3:]
    row_norm, col_norm = math.sqrt(sum(v * v for v in row)), math.sqrt(sum(v * v for v in col))
    if row_norm < 1e-3 or col_norm < 1e-3:
        return None
    row = tuple(v / row_norm for v in row)
    col = tuple(v / col_norm for v in col)
    if abs(sum(a * b for a, b in zip(row, col))) > 0.1:
        return None
    return row + col


def _time(ds, keyword: str) -> float | None:
    """DICOM TM (HHMMSS.frac) as seconds since midnight."""
    text = _text(ds, keyword).replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        hours = int(text[:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds


def add_file_identity(ref: FileRef, identity: StudyIdentity) -> None:
    """Add the identity fields of one file's header to `identity` (nothing if it cannot be read)."""
    try:
        with ref.open() as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on odd files: the header pass reports those
            identity.add_header(pydicom.dcmread(handle, stop_before_pixels=True, force=True,
                                                specific_tags=list(IDENTITY_KEYWORDS)))
    except Exception:  # noqa: BLE001 - an unreadable file adds no identity; the header pass reports it
        return
