"""Supervised fine-tuning of CMR-CLIP's video tower on study labels, whole or with LoRA adapters (PEFT),
on Accelerate.

Labels come from a prepared corpus's `labels` column (a JSON object per study: `{finding: bool, ...,
diagnosis: str}`): several boolean findings make a multi-label head (one logit per finding), a string field
such as `diagnosis` a single-label head, a numeric field (e.g. LVEF) a regression head. Imbalance is
countered by per-label loss weights (negatives/positives per finding; inverse class frequency) or by a
class-balanced sampler. The result directory holds either the whole classifier (full fine-tune) or the
head's config and the adapter alone (LoRA), and `metrics.json` with per-label AUC and F1 at the threshold
chosen on validation; `load_finetuned(dir)` gives the model back either way.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ..data.augment import Augmentation
from ..data.dataset import StudyTextDataset
from ..modeling import CMRCLIPConfig, CMRCLIPForStudyClassification
from ..training.loop import EpochShuffleSampler, load_corpus, load_study_processor, parameter_groups
from .metrics import classification_metrics

VIDEO_LORA_TARGETS = ["qkv", "out_proj", "fc1", "fc2"]
"""LoRA targets in the video tower: fused q/k/v and output of space and time attention, the MLP."""
TEXT_LORA_TARGETS = ["query", "key", "value", "dense"]
"""LoRA targets in a BERT text tower (`CMRCLIPModel.text_model`), for prompt adaptation."""
FINETUNE_CONFIG_FILE = "finetune_config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"


class FinetuneError(ValueError):
    """A fine-tuning run cannot start as asked; the message says what to change."""


@dataclass
class FinetuneConfig:
    """A fine-tuning run: a CMR-CLIP model, a prepared corpus with a `labels` column, the labels to learn."""

    model_dir: str = ""
    """A trained CMR-CLIP directory (`CMRCLIPModel`); its video tower and projection are loaded."""
    data_dir: str = ""
    """A prepared corpus (`cmr-clip prepare`) whose rows have `labels` (JSON)."""
    labels: list = field(default_factory=list)
    """Keys of the `labels` JSON: boolean findings (multi-label), one string field such as `diagnosis`
    (single-label) or one numeric field (regression)."""
    output_dir: str = "cmr-clip-finetuned"
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list = field(default_factory=lambda: list(VIDEO_LORA_TARGETS))
    classifier_hidden_size: int = 0
    """0: a linear head on the study embedding; > 0: an MLP with this hidden width."""
    balance: str = "weights"
    """`weights` (loss weights per label/class), `sampler` (class-balanced sampling, single-label) or `none`."""
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 8
    eval_batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    augment: bool = True
    """Random frame per slot, crop and flip per study; False: the evaluation's middle frames, unaugmented."""
    mixed_precision: str = "no"
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def parse_labels(rows: list[str], names: list[str]) -> tuple[str, np.ndarray, list[str]]:
    """(problem_type, targets, label names) from the corpus's `labels` JSON strings."""
    if not names:
        raise FinetuneError("No labels given: pass --labels with finding names or one field such as diagnosis.")
    records = [json.loads(r) for r in rows]
    missing = sorted({n for n in names for r in records if n not in r})
    if missing:
        raise FinetuneError(f"labels {missing} are not in the corpus's labels column (keys: {sorted(records[0])}).")
    values = [records[0][n] for n in names]
    if all(isinstance(v, bool) for v in values):
        return "multi_label_classification", np.array([[bool(r[n]) for n in names] for r in records], float), names
    if len(names) == 1 and isinstance(values[0], str):
        classes = sorted({str(r[names[0]]) for r in records})
        return "single_label_classification", np.array([classes.index(str(r[names[0]])) for r in records]), classes
    if len(names) == 1 and isinstance(values[0], (int, float)):
        return "regression", np.array([[float(r[names[0]])] for r in records]), names
    raise FinetuneError(
        f"labels {names}: give boolean findings (multi-label) or exactly one string or numeric field."
    )


def single_label_targets(rows: list[str], name: str, classes: list[str]) -> np.ndarray:
    """Class indices of another split, refusing a class the training split never saw."""
    values = [str(json.loads(r)[name]) for r in rows]
    unknown = sorted(set(values) - set(classes))
    if unknown:
        raise FinetuneError(f"{name} values {unknown} are absent from the training split; it cannot learn them.")
    return np.array([classes.index(v) for v in values])


def split_targets(split, problem_type: str, names: list[str], label_names: list[str]) -> np.ndarray:
    if problem_type == "single_label_classification":
        return single_label_targets(split["labels"], names[0], label_names)
    return parse_labels(split["labels"], names)[1]


def imbalance_weights(problem_type: str, targets: np.ndarray, num_labels: int) -> list[float] | None:
    """negatives/positives per finding (multi-label) or inverse class frequency normalised to mean 1."""
    if problem_type == "multi_label_classification":
        positives = targets.sum(0)
        return (((len(targets) - positives) / np.clip(positives, 1, None))).tolist()
    if problem_type == "single_label_classification":
        counts = np.bincount(targets.astype(int), minlength=num_labels).astype(float)
        inverse = 1.0 / np.clip(counts, 1, None)
        return (inverse * num_labels / inverse.sum()).tolist()
    return None


class LabelledStudies(torch.utils.data.Dataset):
    """A corpus split's uint8 frames with the study's target."""

    def __init__(self, split, targets: np.ndarray, train: bool, seed: int, augmentation: Augmentation | None):
        self.studies = StudyTextDataset(split, train=train, seed=seed, augmentation=augmentation)
        self.targets = torch.as_tensor(targets)

    def set_epoch(self, epoch: int) -> None:
        self.studies.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict:
        return {"frames": self.studies[index]["frames"], "labels": self.targets[index]}


class LabelledCollator:
    """uint8 frames -> `pixel_values_videos` with the corpus's study processor; targets stacked."""

    def __init__(self, study_processor):
        self.study_processor = study_processor

    def __call__(self, examples: list[dict]) -> dict:
        return {"pixel_values_videos": self.study_processor.normalise(torch.stack([e["frames"] for e in examples])),
                "labels": torch.stack([e["labels"] for e in examples])}


def apply_lora(model: torch.nn.Module, r: int, alpha: int, dropout: float, targets: list[str],
               modules_to_save: list[str] | None = None):
    """`peft.get_peft_model` with LoRA on the named Linear layers (see VIDEO_LORA_TARGETS,
    TEXT_LORA_TARGETS); the base is frozen, `modules_to_save` (the head) trained and saved whole."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    unknown = sorted(set(targets) - present)
    if unknown:
        raise FinetuneError(f"LoRA targets {unknown} name no Linear layer of this model; choose from {sorted(present)}.")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        modules_to_save=modules_to_save)
    return get_peft_model(model, config)


def trainable_fraction(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def build_classifier(config: FinetuneConfig, problem_type: str, label_names: list[str],
                     label_weights: list[float] | None) -> CMRCLIPForStudyClassification:
    """The classifier from `config.model_dir` (video tower and projection loaded, head fresh)."""
    if not (Path(config.model_dir) / "config.json").is_file():
        raise FinetuneError(f"{config.model_dir} is not a saved CMR-CLIP model (no config.json); train one first.")
    num_labels = len(label_names)
    model = CMRCLIPForStudyClassification.from_pretrained(
        config.model_dir, num_labels=num_labels, problem_type=problem_type,
        id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)},
        label_weights=label_weights, classifier_hidden_size=config.classifier_hidden_size,
    )
    return model


@torch.no_grad()
def predict_scores(model, loader, accelerator: Accelerator, problem_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities or regression outputs, targets) over a loader, gathered across processes."""
    model.eval()
    scores, targets = [], []
    for batch in loader:
        logits = model(pixel_values_videos=batch["pixel_values_videos"]).logits.float()
        if problem_type == "multi_label_classification":
            logits = logits.sigmoid()
        elif problem_type == "single_label_classification":
            logits = logits.softmax(-1)
        scores.append(accelerator.gather_for_metrics(logits.contiguous()))
        targets.append(accelerator.gather_for_metrics(batch["labels"].contiguous()))
    model.train()
    return torch.cat(scores).cpu().numpy(), torch.cat(targets).cpu().numpy()


def finetune(config: FinetuneConfig) -> dict:
    """Fine-tune on a prepared corpus; returns the metrics also written to `output_dir/metrics.json`."""
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    corpus = load_corpus(config.data_dir)
    if "labels" not in corpus["train"].column_names:
        raise FinetuneError(f"{config.data_dir} has no labels column; prepare it from a cohort with labelled reports.")
    if "validation" not in corpus:
        raise FinetuneError(f"{config.data_dir} has no validation split; thresholds are chosen on validation.")
    problem_type, train_targets, label_names = parse_labels(corpus["train"]["labels"], list(config.labels))
    if config.balance not in ("weights", "sampler", "none"):
        raise FinetuneError(f"balance {config.balance!r}: use 'weights', 'sampler' or 'none'.")
    if config.balance == "sampler" and problem_type != "single_label_classification":
        raise FinetuneError("balance 'sampler' draws classes evenly and needs one single-label field; use 'weights'.")
    label_weights = imbalance_weights(problem_type, train_targets, len(label_names)) if config.balance == "weights" else None
    model = build_classifier(config, problem_type, label_names, label_weights)
    model.train()
    if config.lora:
        model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, list(config.lora_targets),
                           modules_to_save=["classifier"])
    trainable, total = trainable_fraction(model)

    study_processor = load_study_processor(config.data_dir)
    collator = LabelledCollator(study_processor)
    # Without augmentation every slot also takes its middle frame, as at evaluation.
    train_set = LabelledStudies(corpus["train"], train_targets, config.augment, config.seed, Augmentation())
    if config.balance == "sampler":
        counts = np.bincount(train_targets.astype(int), minlength=len(label_names))
        sampler = torch.utils.data.WeightedRandomSampler(torch.as_tensor(1.0 / counts[train_targets.astype(int)]),
                                                         len(train_set), generator=torch.Generator().manual_seed(config.seed))
    else:
        sampler = EpochShuffleSampler(len(train_set), config.seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=min(config.batch_size, len(train_set)),
                                               sampler=sampler, collate_fn=collator)
    eval_splits = {name: corpus[name] for name in ("validation", "test") if name in corpus}
    eval_loaders = {
        name: torch.utils.data.DataLoader(
            LabelledStudies(split, split_targets(split, problem_type, list(config.labels), label_names), False, 0, None),
            batch_size=config.eval_batch_size, collate_fn=collator)
        for name, split in eval_splits.items()
    }

    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in eval_loaders.items()}
    steps_per_epoch = max(1, len(train_loader))
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = accelerator.prepare(get_cosine_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps) * accelerator.num_processes,
        total_steps * accelerator.num_processes))

    history, step = [], 0
    progress = tqdm(total=total_steps, disable=not (config.progress and accelerator.is_local_main_process),
                    desc="fine-tuning")
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):
        train_set.set_epoch(epoch)
        if hasattr(sampler, "set_epoch"):
            train_loader.set_epoch(epoch)
        losses = []
        for batch in train_loader:
            loss = model(pixel_values_videos=batch["pixel_values_videos"], labels=batch["labels"]).loss
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.detach().float().item())
            step += 1
            progress.update(1)
            if step >= total_steps:
                break
        history.append({"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(losses))})
        if step >= total_steps:
            break
    progress.close()

    val_scores, val_truth = predict_scores(model, eval_loaders["validation"], accelerator, problem_type)
    evaluation = {}
    for name, loader in eval_loaders.items():
        scores, truth = (val_scores, val_truth) if name == "validation" else predict_scores(
            model, loader, accelerator, problem_type)
        evaluation[name] = classification_metrics(problem_type, label_names, val_scores, val_truth, scores, truth)
    metrics = {"problem_type": problem_type, "labels": label_names, "trainable_parameters": trainable,
               "total_parameters": total, "history": history, "evaluation": evaluation, "config": config.to_dict()}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_finetuned(accelerator.unwrap_model(model), config, metrics)
    accelerator.end_training()
    return metrics


def save_finetuned(model, config: FinetuneConfig, metrics: dict) -> None:
    """Full fine-tune: the whole classifier. LoRA: the adapter and head alone, plus the classifier's config
    (labels, problem type) so `load_finetuned` can rebuild it on the base model."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if config.lora:
        model.get_base_model().config.save_pretrained(out)
    (out / FINETUNE_CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))


def load_finetuned(path: str, merge: bool = False):
    """The fine-tuned classifier of `path` (made by `finetune`): the whole model, or the base model of the
    run with its LoRA adapter (`PeftModel`; `merge=True` folds the adapter in with `merge_and_unload`)."""
    out = Path(path)
    if not (out / ADAPTER_CONFIG_FILE).is_file():
        if not (out / "config.json").is_file():
            raise FinetuneError(f"{path} is not a fine-tuned model directory (no config.json or adapter).")
        return CMRCLIPForStudyClassification.from_pretrained(out)
    from peft import PeftModel

    run = json.loads((out / FINETUNE_CONFIG_FILE).read_text())
    base = CMRCLIPForStudyClassification.from_pretrained(run["model_dir"], config=CMRCLIPConfig.from_pretrained(out))
    model = PeftModel.from_pretrained(base, out)
    return model.merge_and_unload() if merge else model
