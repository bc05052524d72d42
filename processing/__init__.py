"""From DICOM files to model inputs (installed as `cmr_clip.processing`)."""
