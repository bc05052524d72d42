"""Study-report corpora: preparing DICOM studies and impressions into a `datasets.DatasetDict`, and
serving them to training and evaluation."""

from .augment import Augmentation
from .collate import ImpressionTokenizer, StudyCollator
from .dataset import StudyTextDataset

__all__ = ["Augmentation", "ImpressionTokenizer", "StudyCollator", "StudyTextDataset"]
