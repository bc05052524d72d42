"""Results back to the PACS: one study's answer (zero-shot findings with probabilities and decisions, estimates,
a draft impression) as a DICOM Comprehensive SR written with highdicom, stored through STOW-RS.

The SR references the source study and the image series it was computed from (its evidence), carries the
source study's UIDs and patient module (as DICOM requires for filing it with the study) and nothing else
identifying: accession number, referring physician, institution, dates and study ID are left empty. It says it
is research output (series description, a comment item, verification flag UNVERIFIED). Findings and estimates
are coded in a private scheme (`99CMRCLIP`, the finding's vocabulary name as code value) so that
`read_report_sr` gets them back exactly as they went in. Optionally a Secondary Capture montage of the frames
the model used goes with it. Needs the `cmr-clip[dicomweb]` extra.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .decoding import decode_selected, frame_key
from .dicomweb import DICOMWEB_EXTRA, DICOMwebServer, DICOMwebSource, as_dicomweb_source
from .errors import NotAStudyError
from .headers import SECONDARY_CAPTURE_PREFIX
from .layout import StudyLayout, select_frames
from .sources import list_files
from .study import Study

SCHEME = "99CMRCLIP"
RESEARCH_NOTICE = ("Research use only: produced by cmr-clip, a research model, and not a diagnosis. "
                   "Not reviewed by a physician.")
SERIES_DESCRIPTION = "cmr-clip research output (not for diagnosis)"
SERIES_NUMBER = 9901
# What a referencing SR copies from its source: the patient module and the study's and instances' UIDs.
KEPT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                 "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality")
# Type 2 study attributes a DICOM instance must have: present, and empty here.
EMPTIED_KEYWORDS = ("StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName")
UNITS = {"lvef": ("%", "percent")}
MONTAGE_COLUMNS = 8


def load_highdicom():
    """highdicom, or an ImportError naming the extra."""
    try:
        import highdicom
    except ImportError as error:
        raise ImportError(f"writing results as DICOM needs highdicom: pip install '{DICOMWEB_EXTRA}'") from error
    return highdicom


def source_headers(source) -> list[Dataset]:
    """The MR image headers of one study: from a DICOMweb source (fetched already by its header pass, or now)
    or from a study folder, zip or file list."""
    remote = as_dicomweb_source(source)
    if remote is not None:
        headers = remote.headers()
    else:
        headers = []
        for ref in list_files(source)[0]:
            with ref.open() as handle:
                headers.append(pydicom.dcmread(handle, stop_before_pixels=True, force=True))
    headers = [ds for ds in headers if str(ds.get("Modality", "")).upper() == "MR" and "SOPInstanceUID" in ds]
    if not headers or len({str(ds.StudyInstanceUID) for ds in headers}) != 1:
        raise NotAStudyError("results are filed with one study: the source must hold the MR images of exactly one "
                             "study (pick it with DICOMwebServer.study(uid) or its own folder)")
    return headers


def evidence(headers: Iterable[Dataset]) -> list[Dataset]:
    """The headers reduced to what filing needs: patient module and UIDs, the study's Type 2 fields empty."""
    reduced = []
    for header in headers:
        ds = Dataset()
        for keyword in KEPT_KEYWORDS:
            setattr(ds, keyword, header.get(keyword, ""))
        for keyword in EMPTIED_KEYWORDS:
            setattr(ds, keyword, "")
        reduced.append(ds)
    return reduced


def build_report_sr(answer: dict, headers: list[Dataset], impression: str | None = None) -> Dataset:
    """A Comprehensive SR of `answer` (a `zero-shot-cmr` pipeline result: `findings` with `score` and, where a
    threshold exists, `present`; findings without a score are left out; `estimates`) and the draft `impression`, referencing the study of `headers`."""
    hd = load_highdicom()
    title = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report")
    root = hd.sr.ContainerContentItem(name=title, template_id=None)
    items = [_text(hd, "121106", "DCM", "Comment", RESEARCH_NOTICE)]
    # A finding the study lacks the views for has no score (see the pipeline's `score_unassessable`).
    items += [_finding(hd, finding) for finding in answer.get("findings", []) if "score" in finding]
    items += [_estimate(hd, name, value) for name, value in (answer.get("estimates") or {}).items()]
    if impression:
        items.append(_text(hd, "121073", "DCM", "Impression", impression))
    root.ContentSequence = hd.sr.ContentSequence(items)
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence(headers), content=root, series_instance_uid=generate_uid(), series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="cmr-clip", is_complete=False,
        is_final=False, is_verified=False, series_description=SERIES_DESCRIPTION)
    return sr


def _text(hd, code: str, scheme: str, meaning: str, value: str):
    return hd.sr.TextContentItem(name=hd.sr.CodedConcept(code, scheme, meaning), value=value,
                                 relationship_type="CONTAINS")


def _finding(hd, finding: dict):
    name = str(finding["finding"])
    container = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept(name, SCHEME, name.replace("_", " ")),
                                           relationship_type="CONTAINS")
    children = [hd.sr.NumContentItem(name=hd.sr.CodedConcept("probability", SCHEME, "Probability"),
                                     value=float(finding["score"]), unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                                     relationship_type="CONTAINS")]
    if "present" in finding:
        decision = ("373066001", "Yes") if finding["present"] else ("373067005", "No")
        children.append(hd.sr.CodeContentItem(name=hd.sr.CodedConcept("present", SCHEME, "Present"),
                                              value=hd.sr.CodedConcept(decision[0], "SCT", decision[1]),
                                              relationship_type="CONTAINS"))
    container.ContentSequence = hd.sr.ContentSequence(children)
    return container


def _estimate(hd, name: str, value: float):
    unit, meaning = UNITS.get(name, ("1", "no units"))
    return hd.sr.NumContentItem(name=hd.sr.CodedConcept(name, SCHEME, name.replace("_", " ")), value=float(value),
                                unit=hd.sr.CodedConcept(unit, "UCUM", meaning), relationship_type="CONTAINS")


def read_report_sr(ds: Dataset) -> dict:
    """What `build_report_sr` wrote, read back with pydicom: {findings, estimates, impression, notice}."""
    out = {"findings": [], "estimates": {}, "impression": None, "notice": None}
    for item in ds.ContentSequence:
        code = item.ConceptNameCodeSequence[0]
        if item.ValueType == "CONTAINER" and code.CodingSchemeDesignator == SCHEME:
            out["findings"].append(_finding_back(_code_value(code), item.ContentSequence))
        elif item.ValueType == "NUM":
            out["estimates"][_code_value(code)] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "TEXT":
            out["impression" if _code_value(code) == "121073" else "notice"] = str(item.TextValue)
    return out


def _code_value(code: Dataset) -> str:
    """A code's value: codes longer than 16 characters are written as LongCodeValue."""
    return str(code.get("CodeValue") or code.get("LongCodeValue"))


def _finding_back(name: str, children) -> dict:
    finding = {"finding": name}
    for child in children:
        if child.ValueType == "NUM":
            finding["score"] = float(child.MeasuredValueSequence[0].NumericValue)
        elif child.ValueType == "CODE":
            finding["present"] = child.ConceptCodeSequence[0].CodeValue == "373066001"
    return finding


def montage_pixels(study: Study, layout: StudyLayout | None = None, columns: int = MONTAGE_COLUMNS) -> np.ndarray:
    """The frames `layout` selects (8-bit, windowed per series, as the model sees them before resizing) tiled
    row by row, `columns` a row, each in a cell the size of the largest; black where a slot has no frame."""
    selection = select_frames(study, layout or StudyLayout.default())
    images = decode_selected(selection)
    tiles = [None if item is None else images[frame_key(item)] for item in selection.frames]
    height = max((tile.shape[0] for tile in tiles if tile is not None), default=1)
    width = max((tile.shape[1] for tile in tiles if tile is not None), default=1)
    canvas = np.zeros((math.ceil(len(tiles) / columns) * height, columns * width), np.uint8)
    for index, tile in enumerate(tiles):
        if tile is not None:
            top, left = (index // columns) * height, (index % columns) * width
            canvas[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
    return canvas


def build_montage_sc(study: Study, headers: list[Dataset], layout: StudyLayout | None = None) -> Dataset:
    """A Secondary Capture image of `montage_pixels`, filed with the study of `headers` like the SR (patient
    module and study UID, nothing else identifying) and marked as research output. Written with pydicom: a
    montage of several planes has no one patient orientation, which highdicom's SCImage requires."""
    ds = evidence(headers[:1])[0]
    pixels = montage_pixels(study, layout)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_PREFIX  # SC Image Storage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), SERIES_NUMBER + 1, 1
    ds.Modality, ds.ConversionType, ds.Manufacturer = "OT", "WSD", "cmr-clip"
    ds.SeriesDescription, ds.ImageComments = SERIES_DESCRIPTION, RESEARCH_NOTICE
    ds.ImageType, ds.PatientOrientation, ds.BurnedInAnnotation = ["DERIVED", "SECONDARY"], "", "NO"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.preamble = b"\0" * 128  # STOW-RS sends a Part 10 file: preamble and a complete file meta
    validate_file_meta(ds.file_meta, enforce_standard=True)
    return ds


def store_results(answer: dict, source, impression: str | None = None, server: DICOMwebServer | None = None,
                  montage: Study | None = None, layout: StudyLayout | None = None) -> list[str]:
    """Build the SR of one study's `answer` (and, given the `Study` read from `source` as `montage`, a Secondary
    Capture of the frames `layout` used) and store them through STOW-RS on `server` (default: the server `source`
    comes from, a `DICOMwebSource` of one study); returns the SOPInstanceUIDs stored, the SR's first."""
    headers = source_headers(source)
    instances = [build_report_sr(answer, headers, impression)]
    if montage is not None:
        instances.append(build_montage_sc(montage, headers, layout))
    target = server or (source.server if isinstance(source, DICOMwebSource) else None)
    if target is None:
        raise ValueError("store_results needs a server when the study was read from disk: server=DICOMwebServer(url, ...)")
    target.call("storing the results (STOW-RS)", "store_instances", instances)
    return [str(ds.SOPInstanceUID) for ds in instances]
