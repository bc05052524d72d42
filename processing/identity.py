"""A study's patient identity, read from its DICOM headers in a small pass of its own.

The header pass (`read_study`) never copies identity out of a header into what it returns, so that
nothing printed can carry it; the commands that name studies read it here, only to scrub reports and
names (`cmr_clip.privacy.StudyIdentity`, whose repr shows counts, never values). `prepare` collects it
during its header pass instead (`list_studies(..., identity=)`), so that each header is read once;
`headers.add_file_identity` is what that pass falls back on for a file it cannot read.
"""

from __future__ import annotations

from ..privacy import StudyIdentity
from .dicomweb import as_dicomweb_source
from .headers import add_file_identity
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
        add_file_identity(ref, identity)
    return identity
