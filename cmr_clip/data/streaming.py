"""Training on studies read while training (`cmr-clip train --streaming`): `stream_corpus` rows, split over
processes (`split_dataset_by_node`) and data-loader workers, reshuffled every epoch, resumable mid-epoch.

Each study is a shard of the stream, so the per-epoch shard shuffle is a full permutation of the studies;
`shuffle_buffer` > 1 mixes further, but `datasets` does not save a buffer's content, so a run resumed
mid-epoch then refills it and no longer matches an uninterrupted run. Frame draws and augmentation are
seeded by (seed, epoch, study id), as the map-style dataset seeds them by (seed, epoch, index).
"""

from __future__ import annotations

import hashlib

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from datasets import Dataset
from datasets.distributed import split_dataset_by_node

from ..processing import CMRStudyProcessor
from .augment import Augmentation, choose_frames, example_rng
from .prepare import stream_corpus


def study_key(study_id: str) -> int:
    """A non-negative int64 from the study id, stable across processes and runs."""
    return int.from_bytes(hashlib.sha256(study_id.encode("utf-8")).digest()[:8], "big") >> 1


class StreamingStudyTexts(torch.utils.data.IterableDataset):
    """This process's part of a streamed split as training examples (uint8 frames (T, H, W), impression,
    and the study key as `index`), like `StudyTextDataset` with `train=True`. Call `set_epoch` every epoch;
    `state_dict`/`load_state_dict` give and restore the position in the epoch (with `num_workers=0`)."""

    def __init__(self, stream, seed: int = 0, augmentation: Augmentation | None = None):
        self.stream, self.seed, self.augmentation, self.epoch = stream, seed, augmentation, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def __iter__(self):
        for row in self.stream:
            key = study_key(row["study_id"])
            rng = example_rng(self.seed, self.epoch, key)
            frames = choose_frames(torch.as_tensor(row["frames"]), torch.as_tensor(row["slots"]), rng).to(torch.uint8)
            texts = {"impression": row["impression"]}
            if self.augmentation is not None:
                frames = self.augmentation(frames, rng)
                texts = self.augmentation.texts(row["impression"], rng)
            yield {"frames": frames, **texts, "index": key}


def open_streams(config) -> tuple[dict, CMRStudyProcessor]:
    """The training split as a stream and the validation split read once into memory (it is evaluated
    every epoch), from `config.studies_dir` and `config.reports` with `config.stream_processor`'s study
    processor. The splits are those `cmr-clip prepare` draws with its default fractions and seed."""
    if not (config.studies_dir and config.reports):
        raise ValueError("--streaming reads studies while training: give --studies-dir and --reports.")
    if config.num_workers and config.checkpoint_every:
        raise ValueError("--streaming with --num-workers > 0 cannot checkpoint mid-epoch (the workers hold the "
                         "stream's position): use --checkpoint-every 0 (checkpoints at epoch ends) or --num-workers 0.")
    processor = CMRStudyProcessor(**config.stream_processor)
    validation = stream_corpus(config.studies_dir, config.reports, processor, split="validation")
    corpus = {"train": stream_corpus(config.studies_dir, config.reports, processor, split="train"),
              "validation": Dataset.from_list(list(validation), features=validation.features)}
    return corpus, processor


def process_part(stream, config, accelerator: Accelerator, augmentation: Augmentation | None) -> StreamingStudyTexts:
    """This process's studies of `stream`, shuffled per epoch."""
    shuffled = stream.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer)
    part = split_dataset_by_node(shuffled, rank=accelerator.process_index, world_size=accelerator.num_processes)
    return StreamingStudyTexts(part.with_format("torch"), config.seed, augmentation)


def batches_on_every_process(loader, accelerator: Accelerator):
    """The loader's batches, on the accelerator's device, while every process still has one: the parts of
    a stream differ in length (and by the studies that fail), and a process that stopped early would leave
    the others waiting in the gathered loss."""
    iterator = iter(loader)
    while True:
        batch = next(iterator, None)
        has_batch = torch.tensor([int(batch is not None)], device=accelerator.device)
        if int(accelerator.gather(has_batch).min()) == 0:
            return
        yield send_to_device(batch, accelerator.device)
