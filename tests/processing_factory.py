"""Small DICOM studies written with pydicom for the processing tests, with their ground truth.

Geometry is anatomical: a LV long axis pointing left, anterior and inferior; short-axis planes
perpendicular to it; long-axis planes containing it, turned about it from the LV-to-RV direction (right,
anterior, up) towards the anterior wall by 0 (4CH), 60 (3CH) and 115 (2CH) degrees. Every image
carries a synthetic patient identity (for PHI tests) and a bright disc whose radius encodes its slice and
phase, so ordering can also be checked from pixels. The discs are no heart: with blank descriptions
nothing tells the long-axis views apart, and their truth is view 'other' (named views come only from
descriptions here; views from anatomy are tested on the phantom's cohorts).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
IDENTITY = {
    "PatientName": "Zebulon^Quixote",
    "PatientID": "PID-771234",
    "PatientBirthDate": "19470312",
    "AccessionNumber": "ACC-99817",
    "InstitutionName": "Saint Elsewhere Hospital",
    "ReferringPhysicianName": "Doctor^Marvelous",
    "StudyDate": "20240229",
}
LONG_AXIS = np.array([0.7, -0.45, -0.55]) / np.linalg.norm([0.7, -0.45, -0.55])
LAX_ANGLES = {"4ch": 0.0, "3ch": 60.0, "2ch": 115.0}
TOWARDS_RV = np.array([-0.6, -0.7, 0.25])
SIZE = 32
SPACING = 6.0


def _unit(v):
    return v / np.linalg.norm(v)


def sax_axes():
    """(towards the RV, towards the anterior wall), both in the short-axis plane."""
    towards_rv = _unit(TOWARDS_RV - np.dot(TOWARDS_RV, LONG_AXIS) * LONG_AXIS)
    anterior = np.cross(LONG_AXIS, towards_rv)
    return towards_rv, anterior if anterior[1] < 0 else -anterior


def sax_plane(slice_index: int, n_slices: int, spacing: float = 8.0):
    """(position, orientation) of short-axis slice `slice_index`, 0 = most basal."""
    towards_rv, anterior = sax_axes()
    row, col = towards_rv, anterior
    offset = (slice_index - (n_slices - 1) / 2) * spacing
    centre = offset * LONG_AXIS
    return _corner(centre, row, col), tuple(row) + tuple(col)


def lax_plane(view: str):
    towards_rv, anterior = sax_axes()
    angle = np.radians(LAX_ANGLES[view])
    trace = np.cos(angle) * towards_rv + np.sin(angle) * anterior
    row, col = trace, LONG_AXIS
    return _corner(np.zeros(3), row, col), tuple(row) + tuple(col)


def _corner(centre, row, col):
    half = SIZE * SPACING / 2
    return tuple(centre - row * half - col * half)


def disc(radius: float, value: float = 800.0) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = 50.0 + 20.0 * ((xx + yy) % 3)
    image[(xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2 <= radius**2] = value
    return image.astype(np.uint16)


def _base(series_uid, series_number, description, study_uid):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MR_IMAGE
    ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE
    for key, value in IDENTITY.items():
        setattr(ds, key, value)
    ds.Modality = "MR"
    ds.Manufacturer = "TestVendor"
    ds.StudyInstanceUID = study_uid
    ds.StudyTime = "093000"
    ds.StudyID = "1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SeriesTime = f"{10 + series_number // 60:02d}{series_number % 60:02d}00"
    ds.AcquisitionTime = ds.SeriesTime
    ds.Rows = ds.Columns = SIZE
    ds.PixelSpacing = [SPACING, SPACING]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def write_image(path: Path, *, series_uid, series_number, description, study_uid, position, orientation, instance,
                pixels, trigger=None, inversion=None, image_type=("ORIGINAL", "PRIMARY", "M"), scanning="GR"):
    ds = _base(series_uid, series_number, description, study_uid)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = list(image_type)
    ds.ScanningSequence = scanning
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [round(float(v), 4) for v in position]
    ds.ImageOrientationPatient = [round(float(v), 6) for v in orientation]
    if trigger is not None:
        ds.TriggerTime = trigger
    if inversion is not None:
        ds.InversionTime = inversion
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_enhanced(path: Path, *, series_uid, series_number, description, study_uid, frames):
    """One Enhanced MR file; `frames` is a list of (position, orientation, trigger, pixels)."""
    ds = _base(series_uid, series_number, description, study_uid)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(frames)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [SPACING, SPACING]
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for index, (position, orientation, trigger, _) in enumerate(frames):
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [round(float(v), 4) for v in position]
        item.PlanePositionSequence = Sequence([plane])
        orient = Dataset()
        orient.ImageOrientationPatient = [round(float(v), 6) for v in orientation]
        item.PlaneOrientationSequence = Sequence([orient])
        sync = Dataset()
        sync.NominalCardiacTriggerDelayTime = trigger
        item.CardiacSynchronizationSequence = Sequence([sync])
        content = Dataset()
        content.FrameAcquisitionNumber = index
        item.FrameContentSequence = Sequence([content])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    ds.PixelData = np.stack([f[3] for f in frames]).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_study(root: Path, style: str = "siemens", n_slices: int = 5, n_phases: int = 6, lax=("2ch", "3ch", "4ch"),
                lge: bool = True, localizer: bool = True, repeat: bool = True, blank: bool = False, seed: int = 0) -> dict:
    """Write a study; return truth {(relative path, frame index or None): dict(sequence, view, role, slice, phase)}.

    Styles: "siemens" (one series per stack, shuffled InstanceNumbers), "ge" (one series per cine slice),
    "philips" (Enhanced MR multi-frame cine files).
    """
    rng = random.Random(seed)
    study_uid = generate_uid()
    truth: dict = {}
    number = [0]

    def next_series(description):
        number[0] += 1
        return generate_uid(), number[0], "" if blank else description

    def cine_images(planes, view, description, per_slice_series, role="cine"):
        uid, num, desc = next_series(description)
        for s, (position, orientation) in enumerate(planes):
            if per_slice_series and s > 0:
                uid, num, desc = next_series(description)
            instances = list(range(1, n_phases + 1))
            rng.shuffle(instances)  # InstanceNumber is not time order
            for p in range(n_phases):
                rel = f"s{num:03d}/img_{s}_{p}" + ("" if p % 2 else ".dcm")
                write_image(root / rel, series_uid=uid, series_number=num, description=desc, study_uid=study_uid,
                            position=position, orientation=orientation, instance=instances[p],
                            pixels=disc(3 + s + p % 3), trigger=20.0 + p * 45.0)
                truth[(rel, None)] = dict(sequence="cine", view=view, role=role, slice=s, phase=p)

    def enhanced_cine(planes, view, description):
        uid, num, desc = next_series(description)
        frames, keys = [], []
        for s, (position, orientation) in enumerate(planes):
            for p in range(n_phases):
                frames.append((position, orientation, 20.0 + p * 45.0, disc(3 + s + p % 3)))
                keys.append((s, p))
        order = list(range(len(frames)))
        rng.shuffle(order)
        rel = f"philips/series{num}/IM_{num}"
        write_enhanced(root / rel, series_uid=uid, series_number=num, description=desc, study_uid=study_uid,
                       frames=[frames[i] for i in order])
        for index, i in enumerate(order):
            truth[(rel, index)] = dict(sequence="cine", view=view, role="cine", slice=keys[i][0], phase=keys[i][1])

    def single_images(planes, sequence, view, role, description, inversion=300.0):
        uid, num, desc = next_series(description)
        for s, (position, orientation) in enumerate(planes):
            rel = f"s{num:03d}/lge_{s}.dcm"
            write_image(root / rel, series_uid=uid, series_number=num, description=desc, study_uid=study_uid,
                        position=position, orientation=orientation, instance=s + 1, pixels=disc(4 + s),
                        trigger=400.0, inversion=inversion, scanning="GR\\IR")
            truth[(rel, None)] = dict(sequence=sequence, view=view, role=role, slice=s, phase=0)

    if localizer:
        uid, num, desc = next_series("localizer")
        for i, orientation in enumerate([(1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1), (1, 0, 0, 0, 0, -1)]):
            rel = f"s{num:03d}/loc_{i}.dcm"
            write_image(root / rel, series_uid=uid, series_number=num, description=desc, study_uid=study_uid,
                        position=(-100, -100, 0), orientation=orientation, instance=i + 1, pixels=disc(5),
                        image_type=("ORIGINAL", "PRIMARY", "M") if blank else ("ORIGINAL", "PRIMARY", "LOCALIZER"))
            truth[(rel, None)] = dict(sequence="other", view="other", role="localizer", slice=None, phase=None)
    sax = [sax_plane(s, n_slices) for s in range(n_slices)]
    lax_truth = {view: "other" if blank else view for view in lax}
    for view in lax:
        if style == "philips":
            enhanced_cine([lax_plane(view)], lax_truth[view], f"sBTFE_{view.upper()}")
        else:
            cine_images([lax_plane(view)], lax_truth[view], f"cine_{view}", per_slice_series=False)
    if repeat:  # an earlier, discarded attempt at the SAX stack
        before = dict(truth)
        cine_images(sax, "sax", "cine_sax", per_slice_series=(style == "ge"), role="repeat_discarded")
        for key in set(truth) - set(before):
            truth[key]["role"] = "repeat_discarded"
    if style == "philips":
        enhanced_cine(sax, "sax", "sBTFE_SA")
    else:
        cine_images(sax, "sax", "FIESTA CINE SA" if style == "ge" else "cine_tf2d_sax", per_slice_series=(style == "ge"))
    if lge:
        single_images([sax_plane(s, n_slices) for s in range(n_slices)], "lge", "sax", "lge", "de_sax")
        for view in lax:
            single_images([lax_plane(view)], "lge", lax_truth[view], "lge", f"de_{view}")
    return truth
