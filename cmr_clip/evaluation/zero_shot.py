"""Zero-shot evaluation on a prepared corpus: per-finding calibration, AUC, decision thresholds, value estimates.

The scores come from the same `PromptBank` the `zero-shot-cmr` pipeline uses, applied to the model's
embeddings of a split, so the evaluation and the pipeline cannot disagree. On the validation split each
finding's raw probabilities are calibrated (Platt scaling by default, see `pipelines/calibration.py`), then
thresholds are chosen on the calibrated probabilities by Youden's J (the ROC point that maximises
sensitivity + specificity - 1); both are saved with the model's prompt set (`zero_shot_prompts.json`), from
which the pipeline answers calibrated probabilities and yes/no. The test split's expected calibration error
(ECE) is reported before and after calibration.

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
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from ..pipelines.prompts import PromptSet
from ..pipelines.scoring import PromptBank, ZeroShotQuery
from ..pipelines.calibration import CALIBRATION_VERSION, EPSILON, METHODS, logit
from .classification import auc, expected_calibration_error, has_both_classes, labelled, rank_auc, youden_threshold
from .intervals import with_interval
from .regression import known, regression_metrics

THRESHOLD_RULE = "youden_j on the validation split, on calibrated probabilities"
CALIBRATION_METHOD = "platt"
CALIBRATION_SPLIT = "validation split"
ESTIMATE = "lvef"  # the quantity the synthetic cohort's reports measure, and the prompt sets estimate
MIN_MEASURED = 3  # studies with a measured value below which the demo reports no estimate error
INTERVAL_RESAMPLES = 1000  # bootstrap resamples of the demo's AUC intervals (as `cmr-clip evaluate`'s default)


@dataclass
class ZeroShotOutcome:
    """A zero-shot pass over a test split, before any figure is computed.

    prompts: the prompt set with calibration and thresholds fitted on the validation split; scores: finding ->
    calibrated probability per test study; raw_scores: the same before calibration; labels: finding -> 1.0, 0.0 or NaN (unlabelled) per test study;
    estimate: (estimated, measured) `lvef` per test study (measured NaN where the reports have none), or
    None without reports; n: test studies.
    """

    prompts: PromptSet
    scores: dict[str, np.ndarray]
    raw_scores: dict[str, np.ndarray]
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
                   findings: list[str] | None = None, raw: bool = False) -> dict[str, np.ndarray]:
    """finding -> zero-shot probability per study, exactly as the pipeline computes it (calibrated where the prompt
    set has a calibration; `raw`: before it)."""
    query = ZeroShotQuery.build(prompt_set, findings=findings or True)
    scores = _score(model, tokenizer, video_embeds, query, prompt_set)["raw_finding_scores" if raw else "finding_scores"]
    return {name: scores[:, i].numpy() for i, name in enumerate(query.findings)}


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


def fit_finding(raw: np.ndarray, truth: np.ndarray, method: str = "platt") -> dict:
    """The calibration parameters of one finding from raw probabilities and 0/1 labels (both classes needed)."""
    raw, truth = np.asarray(raw, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if method == "platt":
        regression = LogisticRegression(C=1e4).fit(logit(raw)[:, None], truth.astype(int))
        slope = float(regression.coef_[0, 0])
        if slope <= 0:  # no increasing relation on this split: predict the prevalence whatever the score
            prevalence = float(np.clip(truth.mean(), EPSILON, 1 - EPSILON))
            return {"slope": 0.0, "intercept": float(logit(prevalence))}
        return {"slope": slope, "intercept": float(regression.intercept_[0])}
    if method == "isotonic":
        regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, truth)
        return {"x": [float(v) for v in regression.X_thresholds_], "y": [float(v) for v in regression.y_thresholds_]}
    raise ValueError(f"unknown calibration method {method!r}; use one of {METHODS}.")


def fit_calibration(raw: dict[str, np.ndarray], labels: dict[str, np.ndarray], method: str = CALIBRATION_METHOD) -> dict:
    """The prompt set's `calibration` block: each finding with both classes among the labelled studies fitted
    on its raw probabilities (the others are left uncalibrated)."""
    fitted = {name: fit_finding(*labelled(values, labels[name]), method=method) for name, values in raw.items()
              if has_both_classes(labelled(values, labels[name])[1])}
    return {"version": CALIBRATION_VERSION, "method": method, "fitted_on": CALIBRATION_SPLIT, "findings": fitted}


def calibrate(model, tokenizer, video_embeds: torch.Tensor, split, prompt_set: PromptSet,
              method: str = CALIBRATION_METHOD) -> PromptSet:
    """A copy of the prompt set with calibration and thresholds fitted on this (validation) split, for the findings
    that have both classes in it (the others get neither, and the pipeline gives only their raw scores)."""
    raw = finding_scores(model, tokenizer, video_embeds, prompt_set, raw=True)
    labels = split_labels(split, list(raw))
    data = prompt_set.to_dict()
    data["calibration"] = fit_calibration(raw, labels, method)
    calibrated = PromptSet.from_dict(data)
    thresholds = youden_thresholds(finding_scores(model, tokenizer, video_embeds, calibrated), labels)
    data["thresholds"] = {**thresholds, "rule": THRESHOLD_RULE}
    return PromptSet.from_dict(data)


def calibration_errors(outcome: ZeroShotOutcome) -> dict[str, dict]:
    """finding -> ECE of the test split's probabilities before (`raw`) and after (`calibrated`) calibration, and the
    labelled studies they are taken over."""
    result = {}
    for name, truth in outcome.labels.items():
        raw, known_truth = labelled(outcome.raw_scores[name], truth)
        calibrated, _ = labelled(outcome.scores[name], truth)
        result[name] = {"raw": expected_calibration_error(raw, known_truth),
                        "calibrated": expected_calibration_error(calibrated, known_truth), "n": int(len(known_truth))}
    return result


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
                  reports: str | Path | None = None, calibration: str = CALIBRATION_METHOD) -> ZeroShotOutcome:
    """Calibration (`calibration`: platt or isotonic), thresholds and (with `reports`) the `lvef` estimate's
    linear calibration fitted on the `validation` split, then finding scores, labels and (with `reports`, when
    the prompt set has an `lvef` estimate) the LVEF estimate on the `test` split. `embedded`: split name ->
    `embed_split`'s output, for both splits."""
    validation = embedded["validation"]["video"]
    prompts = calibrate(model, tokenizer, validation, corpus["validation"], prompt_set, calibration)
    if reports is not None and ESTIMATE in prompts.estimates:
        measured = read_measurements(reports, list(corpus["validation"]["study_id"]), ESTIMATE)
        prompts = calibrate_estimate(model, tokenizer, validation, measured, prompts, ESTIMATE)
    test, videos = corpus["test"], embedded["test"]["video"]
    scores = finding_scores(model, tokenizer, videos, prompts)
    raw_scores = finding_scores(model, tokenizer, videos, prompts, raw=True)
    estimate = None
    if reports is not None and ESTIMATE in prompts.estimates:
        estimate = (estimates(model, tokenizer, videos, prompts, ESTIMATE),
                    read_measurements(reports, list(test["study_id"]), ESTIMATE))
    return ZeroShotOutcome(prompts, scores, raw_scores, split_labels(test, list(scores)), estimate, len(test))


def zero_shot_figures(outcome: ZeroShotOutcome) -> dict:
    """The demo's zero-shot figures: AUC per finding on the test split with its bootstrap 95% interval and the
    split's positives (`finding_auc_intervals`), the raw scores' AUC, the thresholds, and the LVEF estimate's
    error where at least `MIN_MEASURED` test studies have a measured value."""
    result = {"auc": finding_aucs(outcome.scores, outcome.labels),
              "auc_interval": finding_auc_intervals(outcome.scores, outcome.labels),
              "raw_auc": finding_aucs(outcome.raw_scores, outcome.labels),
              "flat_calibration": flat_calibrations(outcome.prompts),
              "thresholds": outcome.prompts.thresholds,
              "threshold_rule": THRESHOLD_RULE, "ece": calibration_errors(outcome), "n": outcome.n}
    if outcome.estimate is not None and np.sum(~np.isnan(outcome.estimate[1])) >= MIN_MEASURED:
        result["lvef_estimate"] = regression_metrics(*outcome.estimate, minimum=MIN_MEASURED)
    return result


def auc_with_interval(scores: np.ndarray, truth: np.ndarray, resamples: int = INTERVAL_RESAMPLES) -> dict:
    """A finding's AUC over the studies with a label, with its percentile-bootstrap 95% interval over studies
    (`value`, `low`, `high`; None where undefined), their number `n` and how many are `positives`."""
    values, truth = labelled(scores, truth)
    return {**with_interval(rank_auc, values, truth, resamples=resamples), "positives": int(truth.sum()),
            "n": int(len(truth))}


def finding_auc_intervals(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                          resamples: int = INTERVAL_RESAMPLES) -> dict[str, dict]:
    """`auc_with_interval` per finding, without the value (`finding_aucs` has it): how far each AUC can be
    trusted. A split with a handful of positives gives an interval a few tenths wide."""
    return {name: {k: v for k, v in auc_with_interval(values, labels[name], resamples).items() if k != "value"}
            for name, values in scores.items()}


def flat_calibrations(prompts: PromptSet) -> list[str]:
    """Findings whose Platt calibration is flat (slope 0): the validation split showed no increasing relation, so
    the pipeline answers the validation prevalence for every study, and its AUC on any split is 0.5."""
    if not prompts.calibration or prompts.calibration.get("method") != "platt":
        return []
    return [name for name, parameters in prompts.calibration["findings"].items() if parameters["slope"] == 0]


def zero_shot_table(figures: dict) -> str:
    """The figures of `zero_shot_figures` as a markdown table (AUC of the pipeline's calibrated answers with its
    bootstrap 95% interval and the test positives, AUC of the raw scores, per finding; thresholds; LVEF estimate)."""
    raw = figures.get("raw_auc", {})
    intervals = figures.get("auc_interval", {})
    flat = set(figures.get("flat_calibration", ()))
    lines = [f"| zero-shot finding    | AUC  | 95% interval | positives | raw AUC | threshold ({figures['threshold_rule']}) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, value in figures["auc"].items():
        threshold = figures["thresholds"].get(name)
        interval = intervals.get(name, {})
        span = (f"{interval['low']:.2f}-{interval['high']:.2f}" if interval.get("low") is not None else "n/a")
        count = f"{interval['positives']}/{interval['n']}" if interval else ""
        lines.append(f"| {name:<20} | {_auc_cell(value)}{'*' if name in flat else ''} | {span} | {count} | "
                     f"{_auc_cell(raw.get(name))} | {'' if threshold is None else f'{threshold:.3f}'} |")
    if intervals:
        lines.append(f"95% interval: percentile bootstrap over the test studies ({INTERVAL_RESAMPLES} resamples); with a "
                     "handful of positives it understates the uncertainty too, so read it with the count.")
    if any(value is None for value in figures["auc"].values()):
        lines.append("n/a: the test split has no positives (or no negatives) of that finding.")
    if flat:
        lines.append("*: its calibration is flat (on the validation split the raw score did not rise with the finding), "
                     "so the pipeline answers the validation prevalence for every study; the raw AUC is the "
                     "ranking the prompts give.")
    if "ece" in figures:
        lines += ["", ece_table(figures["ece"])]
    if "lvef_estimate" in figures:
        lvef = figures["lvef_estimate"]
        lines += ["", f"LVEF from prompts: MAE {lvef['mae']:.1f} points, Pearson r {lvef['pearson_r']:.2f} "
                      f"({int(lvef['n'])} test studies)."]
    return "\n".join(lines)


def ece_table(ece: dict[str, dict]) -> str:
    """Expected calibration error per finding before and after calibration, as a markdown table."""
    lines = [f"| finding | ECE raw | ECE calibrated (fitted on the {CALIBRATION_SPLIT}) | n |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {_cell(e['raw'])} | {_cell(e['calibrated'])} | {e['n']} |" for name, e in ece.items()]
    return "\n".join(lines)


def _auc_cell(value: float | None) -> str:
    return "n/a " if value is None else f"{value:.2f}"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
