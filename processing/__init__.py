"""From DICOM files to model inputs (installed as `cmr_clip.processing`).

`read_study` reads a PACS export's headers and returns a classified, ordered `Study` (`read_studies` yields
every study of a source holding several; `read_study` refuses such a source with `MultipleStudiesError`
unless `study=` picks one); a `StudyLayout` picks
frames; `CMRStudyProcessor` decodes only those and returns `pixel_values_videos`; `CMRCLIPProcessor` adds
the tokenizer. The package `cmr_clip` (always imported first) registers the processors with transformers'
Auto classes; processing itself depends on no model code.
"""

from .errors import (
    CMRStudyError,
    CorruptPixelDataError,
    InconsistentGeometryError,
    LayoutError,
    MixedPatientsError,
    MultipleStudiesError,
    NoUsableCineError,
    NotAStudyError,
    NotCardiacMRError,
    UnreadableSeriesError,
    UnsupportedCompressionError,
)
from .feature_extraction_cmr_study import CMRStudyProcessor, study_from_arrays
from .headers import Frame, SkippedFile
from .layout import FramePlan, LayoutEntry, StudyLayout, plan_frames, select_frames
from .processing_cmr_clip import CMRCLIPProcessor
from .processing_cmr_target import CMRTargetProcessor, split_sentences
from .reader import SourceStudy, list_studies, read_studies, read_study
from .study import Series, Study

__all__ = [
    "CMRCLIPProcessor",
    "CMRTargetProcessor",
    "CMRStudyError",
    "CMRStudyProcessor",
    "CorruptPixelDataError",
    "Frame",
    "FramePlan",
    "InconsistentGeometryError",
    "LayoutEntry",
    "LayoutError",
    "MixedPatientsError",
    "MultipleStudiesError",
    "NoUsableCineError",
    "NotAStudyError",
    "NotCardiacMRError",
    "Series",
    "SkippedFile",
    "SourceStudy",
    "Study",
    "split_sentences",
    "StudyLayout",
    "UnreadableSeriesError",
    "UnsupportedCompressionError",
    "list_studies",
    "plan_frames",
    "read_studies",
    "read_study",
    "select_frames",
    "study_from_arrays",
]
