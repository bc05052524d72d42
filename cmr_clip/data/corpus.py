"""Loading a prepared corpus (`cmr-clip prepare`'s `datasets.DatasetDict` on disk), for training and evaluation."""

from __future__ import annotations

from pathlib import Path

from datasets import load_from_disk


def load_corpus(data_dir: str):
    path = Path(data_dir)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"{data_dir} is not a prepared corpus (no dataset_dict.json); create one with `cmr-clip prepare`."
        )
    corpus = load_from_disk(str(path))
    if "train" not in corpus:
        raise ValueError(f"{data_dir} has no 'train' split (splits: {list(corpus)}).")
    return corpus
