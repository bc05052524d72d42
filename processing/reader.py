"""`read_study` and `read_studies`: from a PACS export (folder, DICOMDIR, zip or file list) or a PACS itself
(DICOMweb, `dicomweb.py`) to classified, ordered `Study` objects, one per StudyInstanceUID.

An export may hold several studies (a worklist, a CD with several visits, a multi-patient DICOMDIR). The
header pass runs once over the whole source; its frames are split by StudyInstanceUID (`list_studies`),
and each study is checked and classified on its own, so no series and no video ever mixes two studies.
Before classification a study is checked: one patient (compared through salted hashes of PatientID), MR
images (files of another modality are set aside; a study without MR is refused at once), and not an MR of
another body part. Messages name studies by their index in the source and `key` (a short hash of the
StudyInstanceUID), never by UID, path, patient or date.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..privacy import study_key
from ..vocabulary import MODEL_SEQUENCES
from .classification import (
    apply_overrides,
    assign_long_axis_views,
    classify_sequence,
    classify_view,
    find_sax_reference,
    resolve_repeats,
    set_aside_phase_contrast_magnitudes,
)
from .dicomweb import as_dicomweb_source
from .errors import MixedPatientsError, MultipleStudiesError, NotAStudyError, NotCardiacMRError
from .grouping import merge_parallel_slices, split_into_series, split_into_studies
from .headers import Frame, SkippedFile, scan_headers
from .sources import list_files
from .study import Study

logger = logging.getLogger(__name__)

MR_MODALITIES = ("MR", "")  # a missing Modality is given the benefit of the doubt
# BodyPartExamined values (PS3.16 CID 4031 and vendors' spellings) that are never a cardiac study. A study is
# refused only when every MR image names one of these: a blank or unknown value never refuses a study.
NON_CARDIAC_BODY_PARTS = {
    "HEAD", "BRAIN", "SKULL", "HEADNECK", "NECK", "IAC", "ORBIT", "SELLA", "PITUITARY", "CSPINE", "TSPINE", "LSPINE",
    "SSPINE", "SPINE", "KNEE", "ANKLE", "FOOT", "HAND", "WRIST", "ELBOW", "SHOULDER", "HIP", "PELVIS", "PROSTATE",
    "EXTREMITY", "LEG", "ARM", "BREAST", "LIVER", "KIDNEY",
}


@dataclass
class SourceStudy:
    """One study of a source after the header pass: its frames, not yet checked or classified."""

    index: int
    study_instance_uid: str
    frames: list[Frame]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def key(self) -> str:
        return study_key(self.study_instance_uid)

    @property
    def modalities(self) -> list[str]:
        return sorted({frame.modality or "?" for frame in self.frames})

    def describe(self) -> str:
        """One line without identifiers: index, key, modalities, series and images."""
        n_series = len({(frame.series_instance_uid, frame.series_number) for frame in self.frames})
        return (f"study {self.index}: key {self.key}, {'+'.join(self.modalities)}, "
                f"{n_series} series, {len(self.frames)} images")

    def read(self, overrides: dict | None = None) -> Study:
        """Check the study (one patient, MR, cardiac) and classify its series; raises a `CMRStudyError` if it cannot be used."""
        check_one_patient(self)
        mr_frames, set_aside = split_off_non_mr(self)
        check_cardiac(self, mr_frames)
        study = Study(series=classify_series(mr_frames, overrides), skipped=self.skipped + set_aside,
                      study_instance_uid=self.study_instance_uid)
        logger.info("study %s: %d frames in %d series, %d files skipped", self.key, len(mr_frames), len(study.series),
                    len(study.skipped))
        return study


def list_studies(source, num_workers: int | None = None) -> list[SourceStudy]:
    """The studies in `source` after one header pass (no pixel data), in the order the source lists them.

    Raises `NotAStudyError` when no file holds a readable image. Files set aside by the header pass cannot be
    told apart by study and are listed with every study.
    """
    remote = as_dicomweb_source(source)
    if remote is not None:
        frames, skipped, n_files = remote.scan()
    else:
        refs, missing = list_files(source)
        frames, skipped = scan_headers(refs, num_workers=num_workers)
        skipped, n_files = [SkippedFile(m.name, m.reason) for m in missing] + skipped, len(refs)
    if not frames:
        reasons = Counter(item.reason.split(" (")[0] for item in skipped)
        detail = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3)) or "no files"
        raise NotAStudyError(f"no readable DICOM image among the source's {n_files} files ({detail}). Point to a study folder, zip or file list.")
    return [SourceStudy(index, uid, members, list(skipped)) for index, (uid, members) in enumerate(split_into_studies(frames))]


def read_study(source, overrides: dict | None = None, num_workers: int | None = None, study: int | str | None = None) -> Study:
    """Read the headers of every file in `source` (no pixel data) and return the classified `Study`.

    `source` is a directory (searched recursively; DICOMDIRs are honoured), a zip archive, a list of files,
    or a PACS (`processing/dicomweb.py`: a `DICOMwebSource`, or a `DICOMwebServer` or its base URL with
    `study=` a StudyInstanceUID; the headers come from WADO-RS metadata, nothing else is fetched). A source holding several studies raises `MultipleStudiesError` listing them, unless `study` picks
    one: its index in that list, its StudyInstanceUID or its key. `overrides` maps a SeriesInstanceUID or a
    description pattern (`"*cine*sa*"`) to a `(sequence, view)` pair. Raises `NotAStudyError` when no file
    holds a readable image, `NotCardiacMRError` for a study without MR images or of another body part.
    """
    studies = list_studies(as_dicomweb_source(source, study) or source, num_workers=num_workers)
    return pick_study(studies, study).read(overrides)


def read_studies(source, overrides: dict | None = None, num_workers: int | None = None) -> Iterator[Study]:
    """Every study in `source`, one `Study` each, after a single header pass (see `read_study`).

    A study that cannot be used raises its `CMRStudyError` when reached; to report and skip such studies,
    iterate `list_studies(source)` and call `.read()` on each.
    """
    for item in list_studies(source, num_workers=num_workers):
        yield item.read(overrides)


def pick_study(studies: list[SourceStudy], study: int | str | None) -> SourceStudy:
    """The study `study` names (index, StudyInstanceUID or key); the only one when `study` is None."""
    if study is None:
        if len(studies) == 1:
            return studies[0]
        raise MultipleStudiesError(
            f"the source holds {len(studies)} studies; a video never mixes two, so pick one with study=<index> "
            "(or its StudyInstanceUID or key), read them all with read_studies(), or give each study its own "
            "folder:\n" + _listing(studies)
        )
    for item in studies:
        if not isinstance(study, bool) and study in (item.index, str(item.index), item.study_instance_uid, item.key):
            return item
    named = repr(study) if isinstance(study, int) or str(study).isdigit() or str(study).startswith("study-") else "that UID"
    raise NotAStudyError(f"study={named} names none of the source's {len(studies)} studies; pick an index, "
                         "a StudyInstanceUID or a key from:\n" + _listing(studies))


def _listing(studies: list[SourceStudy]) -> str:
    return "\n".join(f"  {item.describe()}" for item in studies)


def check_one_patient(study: SourceStudy) -> None:
    """A StudyInstanceUID shared by two patients' images is a broken export: refuse it (nothing identifying said)."""
    patients = {frame.patient_hash for frame in study.frames if frame.patient_hash is not None}
    if len(patients) > 1:
        raise MixedPatientsError(
            f"study {study.index} (key {study.key}) holds images of {len(patients)} different patients (PatientID "
            "differs under one StudyInstanceUID); the export is inconsistent: re-export the study from the PACS."
        )


def split_off_non_mr(study: SourceStudy) -> tuple[list[Frame], list[SkippedFile]]:
    """(MR frames, files of other modalities set aside); a study without MR images is refused here, before classification."""
    mr_frames = [frame for frame in study.frames if frame.modality in MR_MODALITIES]
    others = [frame for frame in study.frames if frame.modality not in MR_MODALITIES]
    if not mr_frames:
        raise NotCardiacMRError(
            f"study {study.index} (key {study.key}) holds {'+'.join(study.modalities)} images and no MR: cmr-clip reads "
            "cardiac MR studies only. Remove the other modalities' studies from the source or point to the MR study."
        )
    files = {frame.file: frame.modality for frame in others}  # one entry per file, whatever its frame count
    return mr_frames, [SkippedFile(ref.label, f"not MR (modality {modality}): set aside", ref) for ref, modality in files.items()]


def check_cardiac(study: SourceStudy, mr_frames: list[Frame]) -> None:
    """Refuse an MR study whose every image names a body part that is not the heart (a brain or knee MR)."""
    parts = {frame.body_part for frame in mr_frames}
    if parts and parts <= NON_CARDIAC_BODY_PARTS:
        raise NotCardiacMRError(
            f"study {study.index} (key {study.key}) is an MR of {', '.join(sorted(parts))} (BodyPartExamined), not a "
            "cardiac study: cmr-clip reads cardiac MR only."
        )


def classify_series(frames, overrides: dict | None = None):
    """Group, order and classify frames into series (the steps after the header pass)."""
    series = split_into_series(frames)
    for item in series:
        classify_sequence(item, part_of_multiplane=item.orientations_in_dicom_series >= 3)
    set_aside_phase_contrast_magnitudes(series)
    apply_overrides(series, overrides)
    for sequence in MODEL_SEQUENCES:
        series = merge_parallel_slices(series, sequence)
    reference = find_sax_reference(series)
    lax_views = assign_long_axis_views(series, reference)
    for item in series:
        if not (item.overridden and item.view != "other"):
            classify_view(item, reference, lax_views)
    resolve_repeats(series)
    return series
