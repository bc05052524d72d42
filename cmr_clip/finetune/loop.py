"""Supervised fine-tuning of CMR-CLIP on study labels, whole or with LoRA adapters (PEFT), on Accelerate:
the video tower with a classification head (`tower="video"`), or the text tower alone so that label prompts
classify the studies (`tower="text"`, prompt adaptation, see `prompt_tuning`).

Labels come from a prepared corpus's `labels` column (a JSON object per study: `{finding: bool, ...,
diagnosis: str}`): several boolean findings make a multi-label head (one logit per finding), a string field
such as `diagnosis` a single-label head, a numeric field (e.g. LVEF) a regression head. Imbalance is
countered by per-label loss weights (negatives/positives per finding; inverse class frequency) or by a
class-balanced sampler. The result directory holds either the whole classifier (full fine-tune) or the
head's config and the adapter alone (LoRA), and `metrics.json` with per-label AUC and F1 at the threshold
chosen on validation; `load_finetuned(dir)` gives the model back either way. Checkpoints
(`checkpoints/step-*`, Accelerate state) are written as the training loop writes them and `resume="latest"`
continues a run to the same weights.
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
from ..data.collate import StudyCollator
from ..data.dataset import StudyTextDataset
from ..modeling import CMRCLIPConfig, CMRCLIPForStudyClassification, CMRCLIPModel
from ..modeling.modeling_cmr_clip import study_classification_loss
from ..privacy import write_json
from ..training.loop import (
    EpochShuffleSampler,
    load_corpus,
    load_study_processor,
    new_state,
    parameter_groups,
    resume_state,
    save_checkpoint,
)
from .metrics import classification_metrics
from .prompt_tuning import PromptClassifier, label_prompt_groups

VIDEO_LORA_TARGETS = ["qkv", "out_proj", "fc1", "fc2"]
"""LoRA targets in the video tower: fused q/k/v and output of space and time attention, the MLP."""
TEXT_LORA_TARGETS = ["query", "key", "value", "dense"]
"""LoRA targets in a BERT text tower (`CMRCLIPModel.text_model`), for prompt adaptation."""
FINETUNE_CONFIG_FILE = "finetune_config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
PROMPTS_FILE = "label_prompts.json"
TOWERS = ("video", "text")


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
    tower: str = "video"
    """`video`: a head on the video tower (`CMRCLIPForStudyClassification`); `text`: prompt adaptation, the
    text tower trained so that the prompt set's label prompts classify the studies, the video tower frozen."""
    prompt_set: str | None = None
    """`tower="text"`: a prompt set file, built-in name or model directory; default the model's own set."""
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list | None = None
    """Linear layer names; default VIDEO_LORA_TARGETS or TEXT_LORA_TARGETS for the tower."""
    classifier_hidden_size: int = 0
    """0: a linear head on the study embedding; > 0: an MLP with this hidden width."""
    head_init: str = "fresh"
    """`fresh`: the head starts random. `probe` (video tower): the head is first fitted alone on the frozen
    study embeddings of the training split (linear probing), then trained on with the tower (LP-FT), so the
    tower's first updates follow a head that already points at the labels instead of a random one."""
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
    checkpoint_every: int = 0
    """Save `accelerator.save_state` every N optimizer steps (0: only at the end of each epoch)."""
    save_total_limit: int = 2
    resume: str | None = None
    """`latest` or a checkpoint directory."""
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def lora_target_names(self) -> list[str]:
        if self.lora_targets:
            return list(self.lora_targets)
        return list(TEXT_LORA_TARGETS if self.tower == "text" else VIDEO_LORA_TARGETS)


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
    num_labels = len(label_names)
    model = CMRCLIPForStudyClassification.from_pretrained(
        config.model_dir, num_labels=num_labels, problem_type=problem_type,
        id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)},
        label_weights=label_weights, classifier_hidden_size=config.classifier_hidden_size,
    )
    return model


def build_prompt_classifier(config: FinetuneConfig, problem_type: str, label_names: list[str],
                            label_weights: list[float] | None) -> tuple[PromptClassifier, dict]:
    """Prompt adaptation's model from `config.model_dir` (whole CMR-CLIP and its tokenizer) and the label
    prompts it scores against (also saved with the run)."""
    from transformers import AutoTokenizer

    from ..pipelines.prompts import PromptSet, model_prompt_set

    prompt_set = PromptSet.load(config.prompt_set) if config.prompt_set else model_prompt_set(config.model_dir)
    groups = label_prompt_groups(prompt_set, problem_type, label_names)
    clip = CMRCLIPModel.from_pretrained(config.model_dir)
    model = PromptClassifier(clip, AutoTokenizer.from_pretrained(config.model_dir), groups, problem_type, label_weights)
    return model, {"problem_type": problem_type, "labels": label_names, "prompt_groups": groups}


def build_model(config: FinetuneConfig, problem_type: str, label_names: list[str],
                label_weights: list[float] | None) -> tuple[torch.nn.Module, dict | None]:
    """The model to train (with LoRA adapters when asked) and, for prompt adaptation, its label prompts."""
    if config.tower not in TOWERS:
        raise FinetuneError(f"tower {config.tower!r}: use 'video' (a classification head) or 'text' (prompt adaptation).")
    if config.head_init not in ("fresh", "probe") or (config.head_init == "probe" and config.tower != "video"):
        raise FinetuneError(f"head_init {config.head_init!r}: use 'fresh', or 'probe' with the video tower's head.")
    if not (Path(config.model_dir) / "config.json").is_file():
        raise FinetuneError(f"{config.model_dir} is not a saved CMR-CLIP model (no config.json); train one first.")
    if config.tower == "video":
        model, prompts = build_classifier(config, problem_type, label_names, label_weights), None
        if config.lora:
            model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_names(),
                               modules_to_save=["classifier"])
        return model, prompts
    model, prompts = build_prompt_classifier(config, problem_type, label_names, label_weights)
    if config.lora:
        model.clip = apply_lora(model.clip, config.lora_r, config.lora_alpha, config.lora_dropout,
                                config.lora_target_names())
    return model, prompts


def fit_head_on_frozen_embeddings(model, loader, problem_type: str, label_weights: list[float] | None,
                                  steps: int = 300, learning_rate: float = 1e-2, weight_decay: float = 0.01) -> float:
    """Linear probing before fine-tuning: the head alone, full batch, on the study embeddings of `loader`
    (frozen tower, unaugmented). Returns the final training loss."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model.eval()
    embeds, targets = [], []
    with torch.no_grad():
        for batch in loader:
            embeds.append(model(pixel_values_videos=batch["pixel_values_videos"]).study_embeds)
            targets.append(batch["labels"])
    model.train()
    embeds, targets = torch.cat(embeds), torch.cat(targets)
    params = [p for p in base.classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    for _ in range(steps):
        loss = study_classification_loss(problem_type, base.classifier(embeds), targets, label_weights)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return float(loss.detach())


class BalancedEpochSampler(torch.utils.data.Sampler):
    """Class-balanced sampling with replacement (each class drawn equally often on average), a draw that
    depends only on (seed, epoch) so that a resumed run sees the same studies."""

    def __init__(self, classes: np.ndarray, seed: int):
        counts = np.bincount(classes)
        weights = 1.0 / counts[classes]
        self.probabilities, self.seed, self.epoch = weights / weights.sum(), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.probabilities)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(rng.choice(len(self.probabilities), len(self.probabilities), p=self.probabilities).tolist())


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
    model, prompts = build_model(config, problem_type, label_names, label_weights)
    model.train()
    trainable, total = trainable_fraction(model)

    study_processor = load_study_processor(config.data_dir)
    collator = StudyCollator(study_processor)
    # Without augmentation every slot also takes its middle frame, as at evaluation.
    train_set = LabelledStudies(corpus["train"], train_targets, config.augment, config.seed, Augmentation())
    if config.balance == "sampler":
        sampler = BalancedEpochSampler(train_targets.astype(int), config.seed)
    else:
        sampler = EpochShuffleSampler(len(train_set), config.seed)
    # The loader's own generator keeps its per-epoch seed draw off the global RNG (restored by a checkpoint).
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=min(config.batch_size, len(train_set)),
                                               sampler=sampler, collate_fn=collator,
                                               generator=torch.Generator().manual_seed(config.seed))
    eval_splits = {name: corpus[name] for name in ("validation", "test") if name in corpus}
    eval_loaders = {
        name: torch.utils.data.DataLoader(
            LabelledStudies(split, split_targets(split, problem_type, list(config.labels), label_names), False, 0, None),
            batch_size=config.eval_batch_size, collate_fn=collator)
        for name, split in eval_splits.items()
    }

    head_probe_loss = None
    if config.head_init == "probe" and not config.resume:
        probe_loader = torch.utils.data.DataLoader(
            LabelledStudies(corpus["train"], train_targets, False, 0, None), batch_size=config.eval_batch_size,
            collate_fn=collator)
        head_probe_loss = fit_head_on_frozen_embeddings(model, probe_loader, problem_type, label_weights,
                                                        weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in eval_loaders.items()}
    steps_per_epoch = max(1, len(train_loader))
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = accelerator.prepare(get_cosine_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps) * accelerator.num_processes,
        total_steps * accelerator.num_processes))

    state = resume_state(accelerator, config.output_dir, config.resume) if config.resume else new_state()
    progress = tqdm(total=total_steps, initial=state["global_step"],
                    disable=not (config.progress and accelerator.is_local_main_process), desc="fine-tuning")
    for epoch in range(state["epoch"], math.ceil(total_steps / steps_per_epoch)):
        if state["global_step"] >= total_steps:
            break
        train_set.set_epoch(epoch)
        loader = train_loader
        if state["batches_in_epoch"]:
            loader = accelerator.skip_first_batches(train_loader, state["batches_in_epoch"])
        loader.set_epoch(epoch)  # Accelerate passes it to the sampler, also on a loader resuming mid-epoch
        losses = state["epoch_losses"]
        for batch in loader:
            loss = model(pixel_values_videos=batch["pixel_values_videos"], labels=batch["labels"]).loss
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.detach().float().item())
            state["global_step"] += 1
            state["batches_in_epoch"] += 1
            progress.update(1)
            if config.checkpoint_every and state["global_step"] % config.checkpoint_every == 0:
                save_checkpoint(accelerator, config, state)
            if state["global_step"] >= total_steps:
                break
        state["history"].append({"epoch": epoch + 1, "step": state["global_step"], "train_loss": float(np.mean(losses))})
        state["epoch"], state["batches_in_epoch"], state["epoch_losses"] = epoch + 1, 0, []
        save_checkpoint(accelerator, config, state)
    progress.close()

    val_scores, val_truth = predict_scores(model, eval_loaders["validation"], accelerator, problem_type)
    evaluation = {}
    for name, loader in eval_loaders.items():
        scores, truth = (val_scores, val_truth) if name == "validation" else predict_scores(
            model, loader, accelerator, problem_type)
        evaluation[name] = classification_metrics(problem_type, label_names, val_scores, val_truth, scores, truth)
    metrics = {"problem_type": problem_type, "labels": label_names, "tower": config.tower,
               "trainable_parameters": trainable, "total_parameters": total, "head_probe_loss": head_probe_loss,
               "history": state["history"],
               "evaluation": evaluation, "config": config.to_dict()}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_finetuned(accelerator.unwrap_model(model), config, metrics, prompts)
    accelerator.end_training()
    return metrics


def save_finetuned(model, config: FinetuneConfig, metrics: dict, prompts: dict | None = None) -> None:
    """Full fine-tune: the whole classifier (video tower) or CMR-CLIP model (text tower). LoRA: the adapter
    (and head) alone, plus the classifier's config (labels, problem type) so `load_finetuned` can rebuild it
    on the base model. Prompt adaptation also keeps its label prompts."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PromptClassifier):
        model.clip.save_pretrained(out)
        write_json(out / PROMPTS_FILE, prompts)
    else:
        model.save_pretrained(out)
        if config.lora:
            model.get_base_model().config.save_pretrained(out)
    write_json(out / FINETUNE_CONFIG_FILE, config.to_dict())
    write_json(out / "metrics.json", metrics)


def load_finetuned(path: str, merge: bool = False):
    """The fine-tuned model of `path` (made by `finetune`): the whole classifier, or the base model of the run
    with its LoRA adapter (`PeftModel`; `merge=True` folds the adapter in with `merge_and_unload`). A text-tower
    run gives a `PromptClassifier` whose `clip` is the adapted CMR-CLIP model."""
    out = Path(path)
    run = json.loads((out / FINETUNE_CONFIG_FILE).read_text()) if (out / FINETUNE_CONFIG_FILE).is_file() else {}
    if run.get("tower") == "text":
        return load_prompt_classifier(out, run, merge)
    if not (out / ADAPTER_CONFIG_FILE).is_file():
        if not (out / "config.json").is_file():
            raise FinetuneError(f"{path} is not a fine-tuned model directory (no config.json or adapter).")
        return CMRCLIPForStudyClassification.from_pretrained(out)
    from peft import PeftModel

    base = CMRCLIPForStudyClassification.from_pretrained(run["model_dir"], config=CMRCLIPConfig.from_pretrained(out))
    model = PeftModel.from_pretrained(base, out)
    return model.merge_and_unload() if merge else model


def load_prompt_classifier(out: Path, run: dict, merge: bool) -> PromptClassifier:
    from transformers import AutoTokenizer

    prompts = json.loads((out / PROMPTS_FILE).read_text())
    if (out / ADAPTER_CONFIG_FILE).is_file():
        from peft import PeftModel

        clip = PeftModel.from_pretrained(CMRCLIPModel.from_pretrained(run["model_dir"]), out)
        clip = clip.merge_and_unload() if merge else clip
    else:
        clip = CMRCLIPModel.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(run["model_dir"])
    return PromptClassifier(clip, tokenizer, prompts["prompt_groups"], prompts["problem_type"]).eval()
