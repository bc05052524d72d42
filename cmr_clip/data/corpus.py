"""Opening a prepared corpus (`cmr-clip prepare`): its splits, the study processor it was prepared with, and
the video shape its studies have."""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict, load_from_disk

from ..processing import CMRStudyProcessor


def load_corpus(data_dir: str) -> DatasetDict:
    """The splits of the prepared corpus in `data_dir`; it must have a `train` split."""
    path = Path(data_dir)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"{data_dir} is not a prepared corpus (no dataset_dict.json); create one with `cmr-clip prepare`."
        )
    corpus = load_from_disk(str(path))
    if "train" not in corpus:
        raise ValueError(f"{data_dir} has no 'train' split (splits: {list(corpus)}).")
    return corpus


def load_study_processor(data_dir: str) -> CMRStudyProcessor:
    """The study processor the corpus was prepared with (its layout, image size and normalisation)."""
    path = Path(data_dir) / "study_processor"
    if not path.is_dir():
        raise FileNotFoundError(f"{data_dir} has no study_processor/; prepare the corpus with `cmr-clip prepare`.")
    return CMRStudyProcessor.from_pretrained(path)


def load_prepared(data_dir: str) -> tuple[DatasetDict, CMRStudyProcessor]:
    """The corpus in `data_dir` and the study processor it was prepared with."""
    return load_corpus(data_dir), load_study_processor(data_dir)


def corpus_video_shape(split) -> tuple[int, int]:
    """(frames per study, image size) of a prepared or streamed split, from its features."""
    height, width = split.features["frames"].shape[-2:]
    if height != width:
        raise ValueError(f"prepared frames must be square, got {height}x{width}")
    return int(split.features["slots"].shape[0]), int(height)
