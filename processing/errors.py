"""Typed errors of the DICOM study processor.

Every message names the file or series concerned, the problem and what the user can do about it. A
batch job catches `CMRStudyError`, reports it and moves on to the next study.
"""

from __future__ import annotations

CODECS_EXTRA = "cmr-clip[dicom-codecs]"


class CMRStudyError(Exception):
    """Base class of every error raised while reading or processing a study."""


class NotAStudyError(CMRStudyError):
    """The source holds no readable DICOM image (wrong path, empty folder, only broken files)."""


class NoUsableCineError(CMRStudyError):
    """The study has no cine series the model can use."""


class UnsupportedCompressionError(CMRStudyError):
    """Pixel data use a transfer syntax no installed decoder handles."""


class InconsistentGeometryError(CMRStudyError):
    """A series' frames disagree about their geometry (matrix size, orientation) in a way that cannot be repaired."""


class CorruptPixelDataError(CMRStudyError):
    """A file's header is readable but its pixel data cannot be decoded (truncated, malformed)."""


class LayoutError(CMRStudyError):
    """A study layout is malformed (unknown sequence, view or policy, frame counts that do not add up)."""


class MultipleStudiesError(CMRStudyError):
    """The source holds several studies (StudyInstanceUIDs) where one was expected; pick one with `study=`."""


class MixedPatientsError(CMRStudyError):
    """One study (one StudyInstanceUID) holds images of more than one patient: the export is inconsistent."""


class NotCardiacMRError(CMRStudyError):
    """The study is not a cardiac MR: images of another modality (CT, US, ...) or an MR of another body part."""


class UnreadableSeriesError(CorruptPixelDataError):
    """No frame of a series can be decoded; the processor sets the series aside and its views count as missing."""

    def __init__(self, message: str, series=None):
        super().__init__(message)
        self.series = series


class DICOMwebError(CMRStudyError):
    """A study could not be read from a DICOMweb server (PACS); the subclasses say why. `status` is the HTTP
    status the server answered, if any."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class PACSUnreachableError(DICOMwebError):
    """The DICOMweb server did not answer (wrong URL, server down, network or proxy in the way) after the retries."""


class PACSAuthenticationError(DICOMwebError):
    """The DICOMweb server refused the credentials (HTTP 401 or 403)."""


class StudyNotOnServerError(DICOMwebError):
    """The DICOMweb server holds no study with that StudyInstanceUID, or none matches the query."""
