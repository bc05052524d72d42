"""What the tasks that learn from study-impression pairs (contrastive, report) share: the training studies
drawn in a (seed, epoch) order, the validation loader, the check that a corpus fits a video tower, and the
saved result (model, processor, metrics, optionally pushed to the Hub)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...data.augment import Augmentation
from ...data.dataset import EpochShuffleSampler, StudyTextDataset
from ...hub import push
from ...privacy import write_json
from ..config import TrainConfig
from ..loop import TrainData


def check_video_shape(vision, num_frames: int, image_size: int, source: str) -> None:
    """The corpus's studies must fit the video tower of `source` (a model directory or name)."""
    if vision.num_frames < num_frames or vision.image_size != image_size:
        raise ValueError(
            f"{source} takes up to {vision.num_frames} frames of {vision.image_size} px; the corpus has "
            f"{num_frames} of {image_size} px. Prepare the corpus with a matching layout and image size."
        )


def augmentation(config: TrainConfig) -> Augmentation | None:
    for name in ("sentence_loss", "sentence_separation"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be 0 (off) or a positive weight, got {getattr(config, name)}.")
    drawn = config.sentence_loss or config.sentence_separation
    if drawn and config.sentence_pairs < 1:
        raise ValueError("sentence_pairs must be at least 1 with sentence_loss or sentence_separation, got "
                         f"{config.sentence_pairs}.")
    if not config.augment:
        if drawn:
            raise ValueError("sentence_loss and sentence_separation draw sentences of each impression as part of the "
                             "training augmentation: train with augment on, or set both to 0.")
        return None
    return Augmentation(scale=tuple(config.crop_scale), flip=config.flip_probability,
                        sentence_keep=config.sentence_keep,
                        sentence_pairs=config.sentence_pairs if drawn else 0)


def check_train_studies(studies: int) -> None:
    if studies < 2:
        raise ValueError("Training needs at least 2 training studies.")


def paired_train_data(corpus, config: TrainConfig) -> TrainData:
    """The prepared training split, a random frame per slot and augmented, in whole batches."""
    dataset = StudyTextDataset(corpus["train"], train=True, seed=config.seed, augmentation=augmentation(config))
    check_train_studies(len(dataset))
    return TrainData(dataset, len(dataset), EpochShuffleSampler(len(dataset), config.seed), drop_last=True)


def validation_loaders(corpus, config: TrainConfig, collator) -> dict[str, torch.utils.data.DataLoader]:
    """The validation split's loader, when it has at least 2 studies (retrieval needs a choice)."""
    if "validation" not in corpus or len(corpus["validation"]) < 2:
        return {}
    return {"validation": torch.utils.data.DataLoader(StudyTextDataset(corpus["validation"]),
                                                      batch_size=config.eval_batch_size, collate_fn=collator)}


def save_trained(model, processor, config: TrainConfig, metrics: dict, state_dict: dict | None = None) -> None:
    """The trained model (`state_dict`: its full weights, when the model itself holds only a shard), its
    processor and metrics in `output_dir`; pushed to `push_to_hub` when set."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)  # the privacy guard first: a refused run writes no model either
    model.save_pretrained(out, state_dict=state_dict)
    processor.save_pretrained(out)
    if config.push_to_hub:
        push(out, config.push_to_hub, data_dir=config.data_dir)  # card, remote code, PHI guard (vocabulary vs. the corpus identities)
