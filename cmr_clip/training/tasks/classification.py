"""The classification task of the training loop: supervised fine-tuning of CMR-CLIP on study labels
(`finetune`, `cmr-clip finetune`), whole or with LoRA adapters (PEFT): the video tower with a
classification head (`tower="video"`), or the text tower alone so that label prompts classify the studies
(`tower="text"`, prompt adaptation, see `prompt_tuning`).

Labels come from a prepared corpus's `labels` column (a JSON object per study: `{finding: bool, ...,
diagnosis: str}`): several boolean findings make a multi-label head (one logit per finding), a string field
such as `diagnosis` a single-label head, a numeric field (e.g. LVEF) a regression head. Imbalance is
countered by per-label loss weights (negatives/positives per finding; inverse class frequency) or by a
class-balanced sampler. The result directory holds either the whole classifier (full fine-tune) or the
head's config and the adapter alone (LoRA), and `metrics.json` with per-label AUC and F1 at the threshold
chosen on validation; `load_finetuned(dir)` gives the model back either way. Checkpoints
(`checkpoints/step-*`, Accelerate state) are the training loop's, and `resume="latest"` continues a run to
the same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoTokenizer

from ...data.augment import Augmentation
from ...data.collate import StudyCollator
from ...data.corpus import load_prepared
from ...data.dataset import BalancedEpochSampler, EpochShuffleSampler, LabelledStudies
from ...evaluation.classification import classification_metrics
from ...modeling import CMRCLIPConfig, CMRCLIPForStudyClassification, CMRCLIPModel
from ...modeling.modeling_cmr_clip import study_classification_loss
from ...pipelines.prompts import PromptSet, model_prompt_set
from ...privacy import write_json
from ..config import RunConfig
from ..loop import TrainData, run
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
class FinetuneConfig(RunConfig):
    """A fine-tuning run: a CMR-CLIP model, a prepared corpus with a `labels` column, the labels to learn."""

    model_dir: str = ""
    """A trained CMR-CLIP directory (`CMRCLIPModel`); its video tower and projection are loaded."""
    labels: list = field(default_factory=list)
    """Keys of the `labels` JSON: boolean findings (multi-label), one string field such as `diagnosis`
    (single-label) or one numeric field (regression)."""
    tower: str = "video"
    """`video`: a head on the video tower (`CMRCLIPForStudyClassification`); `text`: prompt adaptation, the
    text tower trained so that the prompt set's label prompts classify the studies, the video tower frozen."""
    prompt_set: str | None = None
    """`tower="text"`: a prompt set file, built-in name or model directory; default the model's own set."""
    lora: bool = False
    """Train LoRA adapters (PEFT) and the head, not the whole tower."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path."""
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

    # Fine-tuning's own defaults for fields of `RunConfig`.
    output_dir: str = "cmr-clip-finetuned"
    """Where checkpoints (`checkpoints/`), the classifier or adapter and `metrics.json` go."""
    batch_size: int = 8
    """Studies per batch and process."""
    eval_batch_size: int = 16
    """Studies per evaluation batch."""
    learning_rate: float = 1e-3
    """AdamW's peak learning rate (cosine schedule after a linear warmup)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on norms, biases, embeddings and the logit scale)."""

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


def apply_lora(model: torch.nn.Module, r: int, alpha: int, dropout: float, targets: list[str],
               modules_to_save: list[str] | None = None):
    """`peft.get_peft_model` with LoRA on the named Linear layers (see VIDEO_LORA_TARGETS,
    TEXT_LORA_TARGETS); the base is frozen, `modules_to_save` (the head) trained and saved whole."""
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


class ClassificationTask:
    """Study labels learnt by the video tower's head (`CMRCLIPForStudyClassification`) or by prompt
    adaptation of the text tower (`PromptClassifier`); per-label metrics on validation and test at the end,
    at thresholds chosen on validation."""

    name = "classification"

    def __init__(self, config: FinetuneConfig):
        self.config = config

    def open_corpus(self):
        config = self.config
        corpus, study_processor = load_prepared(config.data_dir)
        if "labels" not in corpus["train"].column_names:
            raise FinetuneError(f"{config.data_dir} has no labels column; prepare it from a cohort with labelled reports.")
        if "validation" not in corpus:
            raise FinetuneError(f"{config.data_dir} has no validation split; thresholds are chosen on validation.")
        return corpus, study_processor

    def build(self, corpus, study_processor) -> torch.nn.Module:
        config = self.config
        self.problem_type, self.train_targets, self.label_names = parse_labels(corpus["train"]["labels"],
                                                                               list(config.labels))
        if config.balance not in ("weights", "sampler", "none"):
            raise FinetuneError(f"balance {config.balance!r}: use 'weights', 'sampler' or 'none'.")
        if config.balance == "sampler" and self.problem_type != "single_label_classification":
            raise FinetuneError("balance 'sampler' draws classes evenly and needs one single-label field; use 'weights'.")
        label_weights = (imbalance_weights(self.problem_type, self.train_targets, len(self.label_names))
                         if config.balance == "weights" else None)
        model, self.prompts = build_model(config, self.problem_type, self.label_names, label_weights)
        model.train()
        self.trainable, self.total = trainable_fraction(model)
        self.collator = StudyCollator(study_processor)
        self.head_probe_loss = None
        if config.head_init == "probe" and not config.resume:
            probe_loader = torch.utils.data.DataLoader(
                LabelledStudies(corpus["train"], self.train_targets, False, 0, None),
                batch_size=config.eval_batch_size, collate_fn=self.collator)
            self.head_probe_loss = fit_head_on_frozen_embeddings(model, probe_loader, self.problem_type, label_weights,
                                                                 weight_decay=config.weight_decay)
        return model

    def train_data(self, corpus, accelerator: Accelerator) -> TrainData:
        config = self.config
        # Without augmentation every slot also takes its middle frame, as at evaluation.
        dataset = LabelledStudies(corpus["train"], self.train_targets, config.augment, config.seed,
                                  Augmentation(scale=tuple(config.crop_scale), flip=config.flip_probability))
        if config.balance == "sampler":
            sampler = BalancedEpochSampler(self.train_targets.astype(int), config.seed)
        else:
            sampler = EpochShuffleSampler(len(dataset), config.seed)
        return TrainData(dataset, len(dataset), sampler)

    def eval_loaders(self, corpus) -> dict:
        return {
            name: torch.utils.data.DataLoader(
                LabelledStudies(corpus[name], split_targets(corpus[name], self.problem_type, list(self.config.labels),
                                                            self.label_names), False, 0, None),
                batch_size=self.config.eval_batch_size, collate_fn=self.collator)
            for name in ("validation", "test") if name in corpus
        }

    def loss(self, model, unwrapped, batch) -> torch.Tensor:
        return model(pixel_values_videos=batch["pixel_values_videos"], labels=batch["labels"]).loss

    def evaluate(self, model, loaders: dict, accelerator: Accelerator) -> dict[str, float]:
        return {}  # thresholds are chosen once, on validation, after training (`results`)

    def results(self, model, loaders: dict, accelerator: Accelerator, summary: dict) -> dict:
        val_scores, val_truth = predict_scores(model, loaders["validation"], accelerator, self.problem_type)
        evaluation = {}
        for name, loader in loaders.items():
            scores, truth = (val_scores, val_truth) if name == "validation" else predict_scores(
                model, loader, accelerator, self.problem_type)
            evaluation[name] = classification_metrics(self.problem_type, self.label_names, val_scores, val_truth,
                                                      scores, truth)
        return {"problem_type": self.problem_type, "labels": self.label_names, "tower": self.config.tower,
                "trainable_parameters": self.trainable, "total_parameters": self.total,
                "head_probe_loss": self.head_probe_loss, "history": summary["history"],
                "evaluation": evaluation, "mixed_precision": summary["mixed_precision"], "config": summary["config"]}

    def save(self, model, study_processor, metrics: dict, state_dict: dict | None = None) -> None:
        save_finetuned(model, self.config, metrics, self.prompts)


def finetune(config: FinetuneConfig) -> dict:
    """Fine-tune on a prepared corpus; returns the metrics also written to `output_dir/metrics.json`."""
    return run(ClassificationTask(config))


def save_finetuned(model, config: FinetuneConfig, metrics: dict, prompts: dict | None = None) -> None:
    """Full fine-tune: the whole classifier (video tower) or CMR-CLIP model (text tower). LoRA: the adapter
    (and head) alone, plus the classifier's config (labels, problem type) so `load_finetuned` can rebuild it
    on the base model. Prompt adaptation also keeps its label prompts."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The privacy guard's writes first: a refused run writes no model either.
    write_json(out / FINETUNE_CONFIG_FILE, config.to_dict())
    write_json(out / "metrics.json", metrics)
    if isinstance(model, PromptClassifier):
        write_json(out / PROMPTS_FILE, prompts)
        model.clip.save_pretrained(out)
    else:
        model.save_pretrained(out)
        if config.lora:
            model.get_base_model().config.save_pretrained(out)


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
    base = CMRCLIPForStudyClassification.from_pretrained(run["model_dir"], config=CMRCLIPConfig.from_pretrained(out))
    model = PeftModel.from_pretrained(base, out)
    return model.merge_and_unload() if merge else model


def load_prompt_classifier(out: Path, run: dict, merge: bool) -> PromptClassifier:
    prompts = json.loads((out / PROMPTS_FILE).read_text())
    if (out / ADAPTER_CONFIG_FILE).is_file():
        clip = PeftModel.from_pretrained(CMRCLIPModel.from_pretrained(run["model_dir"]), out)
        clip = clip.merge_and_unload() if merge else clip
    else:
        clip = CMRCLIPModel.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(run["model_dir"])
    return PromptClassifier(clip, tokenizer, prompts["prompt_groups"], prompts["problem_type"]).eval()
