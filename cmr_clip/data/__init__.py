"""Study-report corpora: preparing DICOM studies and impressions into a `datasets.DatasetDict`, and
serving them to training and evaluation."""

from .augment import Augmentation
from .dataset import StudyTextCollator, StudyTextDataset

__all__ = ["Augmentation", "StudyTextCollator", "StudyTextDataset"]
