"""Zero-shot evaluation on a prepared corpus: per-finding AUC, decision thresholds, value estimates.

The scores come from the same `PromptBank` the `zero-shot-cmr` pipeline uses, applied to the model's
embeddings of a split, so the evaluation and the pipeline cannot disagree. Thresholds are chosen on a
validation split by Youden's J (the ROC point that maximises sensitivity + specificity - 1) and saved
with the model's prompt set (`zero_shot_prompts.json`), from which the pipeline answers yes/no.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..embeddings import embed_split
from ..pipelines.prompts import PromptSet
from ..pipelines.scoring import PromptBank, ZeroShotQuery

THRESHOLD_RULE = "youden_j on the validation split"


class EvaluationError(ValueError):
    """The data cannot support the evaluation asked for (no labels, one class only, mismatched sizes)."""


def split_labels(split, names: list[str]) -> dict[str, np.ndarray]:
    """finding -> float array over the split's rows (1.0 present, 0.0 absent, NaN where a row has no labels)."""
    rows = [json.loads(text) if text else {} for text in split["labels"]]
    return {name: np.array([float(row[name]) if name in row else np.nan for row in rows]) for name in names}


def finding_scores(model, tokenizer, video_embeds: torch.Tensor, prompt_set: PromptSet,
                   findings: list[str] | None = None) -> dict[str, np.ndarray]:
    """finding -> zero-shot probability per study, exactly as the pipeline computes it."""
    query = ZeroShotQuery.build(prompt_set, findings=findings or True)
    scale = float(model.logit_scale_value().detach())
    scores = PromptBank(model, tokenizer).score(video_embeds, query, prompt_set, scale)
    return {name: scores["finding_scores"][:, i].numpy() for i, name in enumerate(query.findings)}


def estimates(model, tokenizer, video_embeds: torch.Tensor, prompt_set: PromptSet, name: str) -> np.ndarray:
    """Zero-shot estimate of a quantity (e.g. `lvef`) per study."""
    query = ZeroShotQuery.build(prompt_set, estimate=name)
    scale = float(model.logit_scale_value().detach())
    scores = PromptBank(model, tokenizer).score(video_embeds, query, prompt_set, scale)
    return scores["estimates"][:, 0].numpy()


def _known(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(truth)
    return scores[keep], truth[keep].astype(int)


def finding_aucs(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float | None]:
    """ROC AUC per finding (None where the split has only one class of that finding)."""
    from sklearn.metrics import roc_auc_score

    result = {}
    for name, values in scores.items():
        s, y = _known(values, labels[name])
        result[name] = float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None
    return result


def youden_thresholds(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Per finding, the score threshold that maximises Youden's J (TPR - FPR); findings with one class are left out."""
    from sklearn.metrics import roc_curve

    thresholds = {}
    for name, values in scores.items():
        s, y = _known(values, labels[name])
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, cut = roc_curve(y, s)
        best = int(np.argmax(tpr - fpr))
        thresholds[name] = float(min(cut[best], 1.0))
    return thresholds


def calibrate(model, tokenizer, video_embeds: torch.Tensor, split, prompt_set: PromptSet) -> PromptSet:
    """A copy of the prompt set with thresholds chosen on this (validation) split, for the findings that have
    both classes in it (the others get none, and the pipeline gives only their scores)."""
    scores = finding_scores(model, tokenizer, video_embeds, prompt_set)
    thresholds = youden_thresholds(scores, split_labels(split, list(scores)))
    data = prompt_set.to_dict()
    data["thresholds"] = {**thresholds, "rule": THRESHOLD_RULE}
    return PromptSet.from_dict(data)


def regression_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean absolute error and Pearson correlation of estimates against measured values."""
    from sklearn.metrics import mean_absolute_error

    keep = ~np.isnan(truth)
    predicted, truth = predicted[keep], truth[keep]
    if len(truth) < 3:
        raise EvaluationError(f"need at least 3 studies with a measured value, got {len(truth)}.")
    return {"mae": float(mean_absolute_error(truth, predicted)), "pearson_r": float(np.corrcoef(predicted, truth)[0, 1]),
            "n": float(len(truth))}


def read_measurements(reports: str | Path, study_ids: list[str], name: str) -> np.ndarray:
    """`measurements[name]` per study id from a reports JSONL (the synthetic cohort writes them); NaN where absent."""
    by_id = {}
    for line in Path(reports).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_id[row["study_id"]] = (row.get("measurements") or {}).get(name)
    return np.array([np.nan if by_id.get(i) is None else float(by_id[i]) for i in study_ids])


def zero_shot_split_metrics(model_dir: str | Path, corpus, reports: str | Path | None = None,
                            save_thresholds: bool = True) -> dict:
    """The demo's zero-shot figures: thresholds from the validation split (saved with the model when asked),
    AUC per finding on the test split, and the LVEF estimate's error when `reports` has measurements."""
    from ..modeling import CMRCLIPModel
    from ..pipelines.prompts import model_prompt_set
    from ..processing import CMRCLIPProcessor

    model = CMRCLIPModel.from_pretrained(model_dir).eval()
    processor = CMRCLIPProcessor.from_pretrained(model_dir)
    prompt_set = model_prompt_set(None)
    calibrated = calibrate(model, processor.tokenizer, embed_split(model, processor, corpus["validation"])["video"],
                           corpus["validation"], prompt_set)
    if save_thresholds:
        calibrated.save(model_dir)
    test = corpus["test"]
    videos = embed_split(model, processor, test)["video"]
    scores = finding_scores(model, processor.tokenizer, videos, calibrated)
    labels = split_labels(test, list(scores))
    result = {"auc": finding_aucs(scores, labels), "thresholds": calibrated.thresholds, "threshold_rule": THRESHOLD_RULE,
              "n": len(test)}
    if reports is not None and "lvef" in calibrated.estimates:
        truth = read_measurements(reports, list(test["study_id"]), "lvef")
        if np.sum(~np.isnan(truth)) >= 3:
            result["lvef_estimate"] = regression_metrics(estimates(model, processor.tokenizer, videos, calibrated, "lvef"), truth)
    return result


def zero_shot_table(figures: dict) -> str:
    """The figures of `zero_shot_split_metrics` as a markdown table (AUC per finding, LVEF estimate)."""
    lines = [f"| zero-shot finding    | AUC  | threshold ({figures['threshold_rule']}) |", "| --- | --- | --- |"]
    for name, auc in figures["auc"].items():
        threshold = figures["thresholds"].get(name)
        lines.append(f"| {name:<20} | {'n/a ' if auc is None else f'{auc:.2f}'} | "
                     f"{'' if threshold is None else f'{threshold:.3f}'} |")
    if any(auc is None for auc in figures["auc"].values()):
        lines.append("n/a: the test split has no positives (or no negatives) of that finding.")
    if "lvef_estimate" in figures:
        lvef = figures["lvef_estimate"]
        lines += ["", f"LVEF from prompts: MAE {lvef['mae']:.1f} points, Pearson r {lvef['pearson_r']:.2f} "
                      f"({int(lvef['n'])} test studies)."]
    return "\n".join(lines)
