"""A study's patient identity, read from its DICOM headers in a small pass of its own.

The header pass (`read_study`) never copies identity out of a header, so that nothing printed can carry
it; `prepare` and the commands that name studies read it here, only to scrub reports and names
(`cmr_clip.privacy.StudyIdentity`, whose repr shows counts, never values).
"""

from __future__ import annotations

import warnings

import pydicom

from ..privacy import IDENTITY_KEYWORDS, StudyIdentity
from .dicomweb import as_dicomweb_source
from .sources import list_files


def read_identity(source) -> StudyIdentity:
    """The identity fields of every readable header of `source` (a folder, zip, file list or DICOMweb source);
    empty if none."""
    identity = StudyIdentity()
    remote = as_dicomweb_source(source)
    if remote is not None:
        for header in remote.headers():
            identity.add_header(header)
        return identity
    refs, _ = list_files(source)
    for ref in refs:
        try:
            with ref.open() as handle, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's notes on odd files: the header pass reports those
                identity.add_header(pydicom.dcmread(handle, stop_before_pixels=True, force=True,
                                                    specific_tags=list(IDENTITY_KEYWORDS)))
        except Exception:  # noqa: BLE001 - an unreadable file adds no identity; the header pass reports it
            continue
    return identity
