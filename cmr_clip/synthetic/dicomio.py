"""Writing an exam as a vendor's DICOM export, and the ground truth of every frame written.

Classic MR Image Storage (one image per file) for everything, except that Philips studies may carry
their cine-like series (cine, tagging, phase-contrast flow) as Enhanced MR Image Storage multi-frame files,
with geometry and timing in the per-frame functional groups. Pixel data is uncompressed little endian; files are written with
`dcmwrite(..., enforce_file_format=True)`, so each has a valid preamble and file meta.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage

from .acquisition import Exam, Frame, Series
from .identity import Identity, UIDSource
from .vendors import VendorStyle, file_path

# Philips enhanced multi-frame series: kind -> (FrameType, PulseSequenceName, ComplexImageComponent).
_ENHANCED = {
    "cine": (["ORIGINAL", "PRIMARY", "M_FFE", "NONE"], "B-TFE", "MAGNITUDE"),
    "tagging": (["ORIGINAL", "PRIMARY", "M_FFE", "NONE"], "T1FFE", "MAGNITUDE"),
    "flow": (["ORIGINAL", "PRIMARY", "M_PCA", "NONE"], "PCA", "MAGNITUDE"),
    "flow_phase": (["ORIGINAL", "PRIMARY", "P_PCA", "NONE"], "PCA", "PHASE"),
}


@dataclass(frozen=True)
class StudyContext:
    """What every file of one study shares."""

    identity: Identity
    age_years: int
    date: dt.date
    accession: str
    style: VendorStyle
    model: str
    heart_rate_bpm: float
    rr_ms: float
    scale: float  # stored value of unit signal (blood on cine)
    slope: float  # RescaleSlope (Philips) or 1
    layout: str
    enhanced_cine: bool
    blank_descriptions: bool
    token: str  # a random folder name used by nested layouts


@dataclass
class _OutputSeries:
    series: Series
    frames: list
    number: int
    description: str
    protocol: str
    sequence_name: str


def _split_for_vendor(exam: Exam, ctx: StudyContext) -> list[_OutputSeries]:
    """Series as the vendor exports them (GE: one series per cine short-axis slice), numbered."""
    style = ctx.style
    out = []
    for series in exam.series:
        header = style.header(series.kind)
        view = style.view_names.get(series.named_view or series.view, "")
        groups = [series.frames]
        if series.kind == "cine" and series.view == "sax" and style.cine_sax_per_slice:
            groups = [[f for f in series.frames if f.slice == s] for s in sorted({f.slice for f in series.frames})]
        for frames in groups:
            number = style.series_base + len(out) * style.series_step
            out.append(_OutputSeries(series, frames, number, header.description.format(view=view).strip(),
                                     header.protocol.format(view=view).strip(), header.sequence_name))
    return out


def _rescale(series: Series, ctx: StudyContext) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of a series: T1 maps hold ms, signed images an offset."""
    if series.values == "t1":
        return 1.0, 0.0
    if series.values == "signed":
        return ctx.slope, -(2 ** (ctx.style.bits_stored - 1)) * ctx.slope
    return ctx.slope, 0.0


def _stored(series: Series, signal: np.ndarray, ctx: StudyContext) -> np.ndarray:
    """Stored pixel values of a frame (real value = stored * slope + intercept)."""
    slope, intercept = _rescale(series, ctx)
    gain = 1.0 if series.values == "t1" else ctx.scale / (2.0 if series.values == "signed" else 1.0)
    stored = np.rint((signal * gain - intercept) / slope)
    return np.clip(stored, 0, 2**ctx.style.bits_stored - 1).astype(np.uint16)


def _ds(value: float, digits: int = 4) -> str:
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _file_meta(sop_class: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _series_dataset(out: _OutputSeries, exam: Exam, ctx: StudyContext, uids: dict, uid: UIDSource) -> Dataset:
    series, style = out.series, ctx.style
    header = style.header(series.kind)
    blank = ctx.blank_descriptions
    first = out.frames[0]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(header.image_type)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ctx.date.strftime("%Y%m%d")
    ds.StudyTime = "081500"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"08{15 + out.number % 40:02d}{out.number % 60:02d}"
    ds.AccessionNumber = ctx.accession
    ds.Modality = "MR"
    ds.Manufacturer = style.manufacturer
    ds.InstitutionName = "Synthetic Heart Institute"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.StudyDescription = "CARDIAC MRI" if style.name != "philips" else "Cardiac^Heart"
    ds.SeriesDescription = "" if blank else out.description
    ds.ManufacturerModelName = ctx.model
    ds.PatientName = ctx.identity.name
    ds.PatientID = ctx.identity.patient_id
    ds.PatientBirthDate = ctx.identity.birth_date
    ds.PatientSex = ctx.identity.sex
    ds.PatientAge = f"{ctx.age_years:03d}Y"
    ds.PatientSize = ctx.identity.height_m
    ds.PatientWeight = ctx.identity.weight_kg
    ds.ScanningSequence = list(header.scanning_sequence)
    ds.SequenceVariant = list(header.sequence_variant)
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "" if blank else out.sequence_name
    ds.SliceThickness = _ds(first.plane.thickness, 2)
    ds.RepetitionTime = "3.1" if series.kind in ("cine", "localizer") else "5.4"
    ds.EchoTime = "1.4" if series.kind in ("cine", "localizer") else "2.1"
    ds.MagneticFieldStrength = _ds(exam.field_strength, 1)
    ds.ProtocolName = "" if blank else out.protocol
    ds.FlipAngle = "50" if series.kind in ("cine", "localizer") else "20"
    for keyword, value in series.dicom.items():
        setattr(ds, keyword, value)
    if any(f.echo_time is not None for f in out.frames):
        del ds.EchoTime  # multi-echo: each image carries its own
    ds.PatientPosition = "HFS"
    if series.slice_spacing is not None:
        ds.SpacingBetweenSlices = _ds(series.slice_spacing, 2)
    if series.kind != "localizer":
        ds.HeartRate = int(round(ctx.heart_rate_bpm))
        ds.NominalInterval = int(round(ctx.rr_ms))
        ds.CardiacNumberOfImages = series.cardiac_images
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uid()
    ds.StudyID = "1"
    ds.SeriesNumber = out.number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = uids["frame_of_reference"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = first.plane.rows
    ds.Columns = first.plane.cols
    ds.BitsAllocated = 16
    ds.BitsStored = style.bits_stored
    ds.HighBit = style.bits_stored - 1
    ds.PixelRepresentation = 0
    return ds


def _add_classic_shared(ds: Dataset, out: _OutputSeries, ctx: StudyContext) -> None:
    """Elements every single-frame file of the series has in common: rescale, and orientation when fixed."""
    slope, intercept = _rescale(out.series, ctx)
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleIntercept = _ds(intercept, 4)
        ds.RescaleSlope = _ds(slope, 5)
        ds.RescaleType = "US"
    planes = {(f.plane.row_dir, f.plane.col_dir, f.plane.spacing) for f in out.frames}
    if len(planes) == 1:  # otherwise (localizers) orientation and spacing go with each frame
        for keyword, value in _orientation(out.frames[0].plane).items():
            setattr(ds, keyword, value)


def _orientation(plane) -> dict:
    return {"ImageOrientationPatient": [_ds(v, 6) for v in (*plane.row_dir, *plane.col_dir)],
            "PixelSpacing": [_ds(v) for v in plane.spacing]}


def _window(stored: np.ndarray, slope: float, intercept: float) -> tuple[str, str]:
    low, high = np.percentile(stored.ravel()[::3], (1, 99.5)) * slope + intercept  # every 3rd pixel is plenty
    return _ds((low + high) / 2, 1), _ds(max(high - low, 1.0), 1)


def _frame_elements(out: _OutputSeries, frame: Frame, ctx: StudyContext, instance: int, sop_uid: str,
                    shared: Dataset) -> list[tuple[int, bytes]]:
    """The encoded elements of a classic image that are not already in its series' `shared` dataset."""
    plane = frame.plane
    values = {"SOPInstanceUID": sop_uid, "InstanceNumber": instance,
              "ImagePositionPatient": [_ds(v) for v in plane.position],
              "SliceLocation": _ds(float(np.dot(plane.position, plane.normal)), 4)}
    if "ImageOrientationPatient" not in shared:
        values.update(_orientation(plane))
    if frame.trigger_time is not None:
        values["TriggerTime"] = _ds(frame.trigger_time, 2)
    if frame.inversion_time is not None:
        values["InversionTime"] = _ds(frame.inversion_time, 1)
    if frame.echo_time is not None:
        values["EchoTime"] = _ds(frame.echo_time, 2)
        values["EchoNumbers"] = frame.phase + 1
    if frame.temporal_index is not None:
        values["TemporalPositionIdentifier"] = frame.temporal_index
    stored = _stored(out.series, frame.signal, ctx)
    values["WindowCenter"], values["WindowWidth"] = _window(stored, *_rescale(out.series, ctx))
    values["PixelData"] = stored.tobytes()
    return sorted(_element(keyword, value) for keyword, value in values.items())


@functools.lru_cache(maxsize=None)
def _tag_and_vr(keyword: str) -> tuple[int, str]:
    return tag_for_keyword(keyword), dictionary_VR(keyword)


def _element(keyword: str, value) -> tuple[int, bytes]:
    """One element of a text VR (UI, IS, DS, ...), UL or OW (`bytes`: pixel data) as explicit VR little endian
    (PS3.5 7.1.2), for the elements that differ between the files of a series: pydicom's element writer
    costs ~0.2 ms each."""
    tag, vr = _tag_and_vr(keyword)
    group, number = tag >> 16, tag & 0xFFFF
    if isinstance(value, bytes):
        return tag, struct.pack("<HH2sHI", group, number, b"OW", 0, len(value)) + value
    if vr == "UL":
        return tag, struct.pack("<HH2sHI", group, number, b"UL", 4, value)
    data = ("\\".join(map(str, value)) if isinstance(value, list) else str(value)).encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return tag, struct.pack("<HH2sH", group, number, vr.encode(), len(data)) + data


def _encode(ds: Dataset, known: dict) -> list[tuple[int, bytes]]:
    """Each element of `ds` encoded as explicit VR little endian, in tag order. `known` holds the encodings
    of elements seen before (most of a series' shared elements are the study's): the same tag, VR and value
    encode to the same bytes."""
    encoded = []
    for elem in ds:
        key = (int(elem.tag), elem.VR, type(elem.value).__name__, repr(elem.value))
        if key not in known:
            fp = DicomBytesIO()
            fp.is_little_endian, fp.is_implicit_VR = True, False
            write_data_element(fp, elem)
            known[key] = fp.getvalue()
        encoded.append((key[0], known[key]))
    return encoded


class _ClassicSeriesWriter:
    """Writes the single-frame files of one series, encoding the elements they share only once (`known`: the
    encodings of the study's earlier series, see `_encode`).

    The bytes are what `dcmwrite(..., enforce_file_format=True)` writes for the merged dataset (a test
    checks this); encoding the ~60 shared elements and the file meta per file would dominate the cohort's
    run time.
    """

    def __init__(self, shared: Dataset, known: dict):
        self.shared = _encode(shared, known)
        self.meta = _encode(_file_meta_template(shared.SOPClassUID), known)
        self._folders: set = set()

    def write(self, path: Path, sop_uid: str, frame_elements: list[tuple[int, bytes]]) -> None:
        meta = [data for _, data in heapq.merge(self.meta, [_element("MediaStorageSOPInstanceUID", sop_uid)])]
        parts = [b"\x00" * 128 + b"DICM", _element("FileMetaInformationGroupLength", sum(map(len, meta)))[1], *meta]
        parts.extend(data for _, data in heapq.merge(self.shared, frame_elements, key=lambda item: item[0]))
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        path.write_bytes(b"".join(parts))


def _file_meta_template(sop_class: str) -> FileMetaDataset:
    """The file meta elements every file of a series shares: those `dcmwrite(..., enforce_file_format=True)`
    writes, without the group length and the instance UID."""
    meta = _file_meta(sop_class)
    meta.MediaStorageSOPInstanceUID = "1"  # validation requires it; each file gets its own
    validate_file_meta(meta, enforce_standard=True)
    del meta.MediaStorageSOPInstanceUID
    return meta


def _instance_order(out: _OutputSeries, ctx: StudyContext) -> list[int]:
    """1-based InstanceNumbers: slice-major for most, phase-major for Philips stacks."""
    frames = out.frames
    if ctx.style.name == "philips":
        order = sorted(range(len(frames)), key=lambda i: (frames[i].phase, frames[i].slice))
    else:
        order = sorted(range(len(frames)), key=lambda i: (frames[i].slice, frames[i].phase))
    instance = [0] * len(frames)
    for rank, i in enumerate(order):
        instance[i] = rank + 1
    return instance


def _truth(path: str, frame_index, out: _OutputSeries, frame: Frame) -> dict:
    s = out.series
    return {"path": path, "frame": frame_index, "series_number": out.number, "sequence": s.sequence,
            "view": s.view, "role": s.role, "slice": frame.slice, "phase": frame.phase}


def _write(path: Path, ds: Dataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)


def _enhanced(ds: Dataset, out: _OutputSeries, ctx: StudyContext, uid) -> None:
    """Turn a series dataset into one Enhanced MR multi-frame image holding all its frames."""
    frames = out.frames
    first = frames[0].plane
    pixels = np.stack([_stored(out.series, f.signal, ctx) for f in frames])
    slope, intercept = _rescale(out.series, ctx)
    frame_type, pulse_sequence, component = _ENHANCED[out.series.kind]
    ds.SOPInstanceUID = uid()
    ds.InstanceNumber = 1
    ds.ImageType = frame_type
    ds.NumberOfFrames = len(frames)
    ds.ContentQualification = "PRODUCT"
    ds.AcquisitionDateTime = ctx.date.strftime("%Y%m%d") + ds.AcquisitionTime
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PulseSequenceName = pulse_sequence
    ds.EchoPulseSequence = "GRADIENT"
    shared = Dataset()
    frame_kind = Dataset()
    frame_kind.FrameType = list(ds.ImageType)
    frame_kind.PixelPresentation = "MONOCHROME"
    frame_kind.VolumetricProperties = "VOLUME"
    frame_kind.VolumeBasedCalculationTechnique = "NONE"
    frame_kind.ComplexImageComponent = component
    frame_kind.AcquisitionContrast = "MIXED"
    shared.MRImageFrameTypeSequence = Sequence([frame_kind])
    measures = Dataset()
    measures.PixelSpacing = [_ds(v) for v in first.spacing]
    measures.SliceThickness = _ds(first.thickness, 2)
    if out.series.slice_spacing is not None:
        measures.SpacingBetweenSlices = _ds(out.series.slice_spacing, 2)
    orientation = Dataset()
    orientation.ImageOrientationPatient = [_ds(v, 6) for v in (*first.row_dir, *first.col_dir)]
    transform = Dataset()
    transform.RescaleIntercept = _ds(intercept, 4)
    transform.RescaleSlope = _ds(slope, 5)
    transform.RescaleType = "US"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for f in frames:
        item = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = f.slice + 1
        content.TemporalPositionIndex = f.phase + 1
        content.DimensionIndexValues = [f.slice + 1, f.phase + 1]
        position = Dataset()
        position.ImagePositionPatient = [_ds(v) for v in f.plane.position]
        cardiac = Dataset()
        cardiac.NominalCardiacTriggerDelayTime = float(f.trigger_time)
        cardiac.RRIntervalTimeNominal = round(float(ctx.rr_ms), 1)
        item.FrameContentSequence = Sequence([content])
        item.PlanePositionSequence = Sequence([position])
        item.CardiacSynchronizationSequence = Sequence([cardiac])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    dimension_org = uid()
    ds.DimensionOrganizationSequence = Sequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dimension_org
    index = []
    for pointer, group in ((0x00209057, 0x00209111), (0x00209128, 0x00209111)):
        item = Dataset()
        item.DimensionOrganizationUID = dimension_org
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = group
        index.append(item)
    ds.DimensionIndexSequence = Sequence(index)
    ds.WindowCenter, ds.WindowWidth = _window(pixels, slope, intercept)
    ds.PixelData = pixels.tobytes()


def write_exam(study_dir: Path, exam: Exam, ctx: StudyContext, uid: UIDSource) -> list[dict]:
    """Write all series of `exam` under `study_dir`; returns the truth entry of every frame written."""
    uids = {"study": uid(), "frame_of_reference": uid()}
    folder_name = lambda out: "" if ctx.blank_descriptions else out.description  # noqa: E731
    truth = []
    file_index = 1
    known: dict = {}  # element encodings, shared by the study's series
    for out in _split_for_vendor(exam, ctx):
        ds = _series_dataset(out, exam, ctx, uids, uid)
        if ctx.enhanced_cine and out.series.kind in _ENHANCED:
            ds.SOPClassUID = EnhancedMRImageStorage
            _enhanced(ds, out, ctx, uid)
            ds.file_meta = _file_meta(ds.SOPClassUID)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            rel = file_path(ctx.layout, out.number, folder_name(out), 1, file_index, ctx.token)
            _write(study_dir / rel, ds)
            truth.extend(_truth(rel, i, out, f) for i, f in enumerate(out.frames))
            file_index += 1
            continue
        ds.SOPClassUID = MRImageStorage
        _add_classic_shared(ds, out, ctx)
        writer = _ClassicSeriesWriter(ds, known)
        for frame, instance in zip(out.frames, _instance_order(out, ctx)):
            rel = file_path(ctx.layout, out.number, folder_name(out), instance, file_index, ctx.token)
            sop_uid = uid()
            writer.write(study_dir / rel, sop_uid, _frame_elements(out, frame, ctx, instance, sop_uid, ds))
            truth.append(_truth(rel, None, out, frame))
            file_index += 1
    return truth
