"""Zero-shot evaluation on a prepared corpus: per-finding AUC, decision thresholds, value estimates.

The scores come from the same `PromptBank` the `zero-shot-cmr` pipeline uses, applied to the model's
embeddings of a split, so the evaluation and the pipeline cannot disagree. Thresholds are chosen on a
validation split by Youden's J (the ROC point that maximises sensitivity + specificity - 1) and saved
with the model's prompt set (`zero_shot_prompts.json`), from which the pipeline answers yes/no.

`run_zero_shot` is the one calibrate -> score -> label -> estimate pass over a validation and a test split;
the demo's figures (`zero_shot_figures`) and `evaluate_model`'s figures with intervals are both taken from
its `ZeroShotOutcome`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..pipelines.prompts import PromptSet
from ..pipelines.scoring import PromptBank, ZeroShotQuery
from .classification import auc, labelled, youden_threshold
from .regression import known, regression_metrics

THRESHOLD_RULE = "youden_j on the validation split"
ESTIMATE = "lvef"  # the quantity the synthetic cohort's reports measure, and the prompt sets estimate
MIN_MEASURED = 3  # studies with a measured value below which the demo reports no estimate error


@dataclass
class ZeroShotOutcome:
    """A zero-shot pass over a test split, before any figure is computed.

    prompts: the prompt set with thresholds calibrated on the validation split; scores: finding ->
    probability per test study; labels: finding -> 1.0, 0.0 or NaN (unlabelled) per test study;
    estimate: (estimated, measured) `lvef` per test study (measured NaN where the reports have none), or
    None without reports; n: test studies.
    """

    prompts: PromptSet
    scores: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    estimate: tuple[np.ndarray, np.ndarray] | None
    n: int


def split_labels(split, names: list[str]) -> dict[str, np.ndarray]:
    """finding -> float array over the split's rows (1.0 present, 0.0 absent, NaN where a row has no labels)."""
    rows = [json.loads(text) if text else {} for text in split["labels"]]
    return {name: np.array([float(row[name]) if name in row else np.nan for row in rows]) for name in names}


def _score(model, tokenizer, video_embeds: torch.Tensor, query: ZeroShotQuery, prompt_set: PromptSet) -> dict:
    scale = float(model.logit_scale_value().detach())
    return PromptBank(model, tokenizer).score(video_embeds, query, prompt_set, scale)


def finding_scores(model, tokenizer, video_embeds: torch.Tensor, prompt_set: PromptSet,
                   findings: list[str] | None = None) -> dict[str, np.ndarray]:
    """finding -> zero-shot probability per study, exactly as the pipeline computes it."""
    query = ZeroShotQuery.build(prompt_set, findings=findings or True)
    scores = _score(model, tokenizer, video_embeds, query, prompt_set)
    return {name: scores["finding_scores"][:, i].numpy() for i, name in enumerate(query.findings)}


def estimates(model, tokenizer, video_embeds: torch.Tensor, prompt_set: PromptSet, name: str) -> np.ndarray:
    """Zero-shot estimate of a quantity (e.g. `lvef`) per study."""
    query = ZeroShotQuery.build(prompt_set, estimate=name)
    return _score(model, tokenizer, video_embeds, query, prompt_set)["estimates"][:, 0].numpy()


def finding_aucs(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float | None]:
    """ROC AUC per finding (None where the split has only one class of that finding)."""
    return {name: auc(*labelled(values, labels[name])) for name, values in scores.items()}


def youden_thresholds(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Per finding, the score threshold that maximises Youden's J (TPR - FPR); findings with one class are left out."""
    thresholds = {name: youden_threshold(*labelled(values, labels[name])) for name, values in scores.items()}
    return {name: threshold for name, threshold in thresholds.items() if threshold is not None}


def calibrate(model, tokenizer, video_embeds: torch.Tensor, split, prompt_set: PromptSet) -> PromptSet:
    """A copy of the prompt set with thresholds chosen on this (validation) split, for the findings that have
    both classes in it (the others get none, and the pipeline gives only their scores)."""
    scores = finding_scores(model, tokenizer, video_embeds, prompt_set)
    thresholds = youden_thresholds(scores, split_labels(split, list(scores)))
    data = prompt_set.to_dict()
    data["thresholds"] = {**thresholds, "rule": THRESHOLD_RULE}
    return PromptSet.from_dict(data)


def read_measurements(reports: str | Path, study_ids: list[str], name: str) -> np.ndarray:
    """`measurements[name]` per study id from a reports JSONL (the synthetic cohort writes them); NaN where absent."""
    by_id = {}
    for line in Path(reports).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_id[row["study_id"]] = (row.get("measurements") or {}).get(name)
    return np.array([np.nan if by_id.get(i) is None else float(by_id[i]) for i in study_ids])


def calibrate_estimate(model, tokenizer, video_embeds: torch.Tensor, measured: np.ndarray, prompt_set: PromptSet,
                       name: str) -> PromptSet:
    """A copy of the prompt set whose estimate `name` carries a linear calibration fitted by least squares on
    this (validation) split's measured values, when at least `MIN_MEASURED` studies have one and the fit
    rises with the similarity-weighted value; otherwise the estimate is left as it was (a falling fit would
    only say that the prompts order studies the wrong way: fix the prompts, not the sign)."""
    data = prompt_set.to_dict()
    spec = {k: v for k, v in data["estimates"][name].items() if k != "calibration"}
    data["estimates"][name] = spec
    raw, truth = known(estimates(model, tokenizer, video_embeds, PromptSet.from_dict(data), name), measured)
    if len(truth) >= MIN_MEASURED and raw.std() > 0:
        slope, intercept = np.polyfit(raw, truth, 1)
        if slope > 0:
            spec["calibration"] = {"slope": float(slope), "intercept": float(intercept),
                                   "fitted_on": "validation", "n": int(len(truth))}
    return PromptSet.from_dict(data)


def run_zero_shot(model, tokenizer, embedded: dict[str, dict[str, torch.Tensor]], corpus, prompt_set: PromptSet,
                  reports: str | Path | None = None) -> ZeroShotOutcome:
    """Thresholds (and, with `reports`, the `lvef` estimate's calibration) fitted on the `validation` split,
    then finding scores, labels and (with `reports`, when the prompt set has an `lvef` estimate) the LVEF
    estimate on the `test` split. `embedded`: split name -> `embed_split`'s output, for both splits."""
    validation = embedded["validation"]["video"]
    prompts = calibrate(model, tokenizer, validation, corpus["validation"], prompt_set)
    if reports is not None and ESTIMATE in prompts.estimates:
        measured = read_measurements(reports, list(corpus["validation"]["study_id"]), ESTIMATE)
        prompts = calibrate_estimate(model, tokenizer, validation, measured, prompts, ESTIMATE)
    test, videos = corpus["test"], embedded["test"]["video"]
    scores = finding_scores(model, tokenizer, videos, prompts)
    estimate = None
    if reports is not None and ESTIMATE in prompts.estimates:
        estimate = (estimates(model, tokenizer, videos, prompts, ESTIMATE),
                    read_measurements(reports, list(test["study_id"]), ESTIMATE))
    return ZeroShotOutcome(prompts, scores, split_labels(test, list(scores)), estimate, len(test))


def zero_shot_figures(outcome: ZeroShotOutcome) -> dict:
    """The demo's zero-shot figures: AUC per finding on the test split, the thresholds, and the LVEF
    estimate's error where at least `MIN_MEASURED` test studies have a measured value."""
    result = {"auc": finding_aucs(outcome.scores, outcome.labels), "thresholds": outcome.prompts.thresholds,
              "threshold_rule": THRESHOLD_RULE, "n": outcome.n}
    if outcome.estimate is not None and np.sum(~np.isnan(outcome.estimate[1])) >= MIN_MEASURED:
        result["lvef_estimate"] = regression_metrics(*outcome.estimate, minimum=MIN_MEASURED)
    return result


def zero_shot_table(figures: dict) -> str:
    """The figures of `zero_shot_figures` as a markdown table (AUC per finding, LVEF estimate)."""
    lines = [f"| zero-shot finding    | AUC  | threshold ({figures['threshold_rule']}) |", "| --- | --- | --- |"]
    for name, value in figures["auc"].items():
        threshold = figures["thresholds"].get(name)
        lines.append(f"| {name:<20} | {'n/a ' if value is None else f'{value:.2f}'} | "
                     f"{'' if threshold is None else f'{threshold:.3f}'} |")
    if any(value is None for value in figures["auc"].values()):
        lines.append("n/a: the test split has no positives (or no negatives) of that finding.")
    if "lvef_estimate" in figures:
        lvef = figures["lvef_estimate"]
        lines += ["", f"LVEF from prompts: MAE {lvef['mae']:.1f} points, Pearson r {lvef['pearson_r']:.2f} "
                      f"({int(lvef['n'])} test studies)."]
    return "\n".join(lines)
