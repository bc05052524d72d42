"""`evaluate_model`: every figure of a CMR-CLIP model on a prepared corpus, written as metrics.json, a
markdown summary and PNG plots (what `cmr-clip evaluate` runs).

- zero-shot: calibration and thresholds (Youden's J) fitted on the validation split, ROC AUC per finding and
  the expected calibration error before and after calibration on the test split, and the LVEF estimate's MAE and correlation when a reports file with measurements is given;
- few-shot: prototype and logistic probes on frozen embeddings (training split as the support pool,
  test split scored), k-shot episodes;
- retrieval: Recall@K and median rank between test studies and their impressions;
- the zero-shot AUCs and retrieval again for each vendor and field strength in the test split;
- robustness: cosine of each test embedding to itself after frames are shuffled within a view or 25%
  are dropped.
Zero-shot, retrieval and robustness figures carry a bootstrap 95% interval over studies (queries for
retrieval; `intervals.with_interval`); few-shot figures carry the 95% interval of the mean over episodes.

`evaluate_held_out` is the demo's evaluation: retrieval and zero-shot point figures on the test split,
from the same embeddings and the same zero-shot pass (`zero_shot.run_zero_shot`) as `evaluate_model`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..data.corpus import load_corpus
from ..embeddings import embed_split
from ..modeling import CMRCLIPModel
from ..precision import set_precision
from ..pipelines.prompts import PromptSet, model_prompt_set
from ..privacy import write_json, write_text
from ..processing import CMRCLIPProcessor
from .classification import has_both_classes
from .few_shot import DEFAULT_KS, few_shot_curve
from .intervals import with_interval
from .plots import write_plots
from .prompt_mining import mine_prompt_set
from .regression import known, mean_absolute_error, pearson_r
from .retrieval import DEFAULT_KS as RECALL_KS
from .retrieval import chance_recall, effective_rank, match_ranks, median_rank, recall_at_k, retrieval_metrics
from .robustness import embedding_stability
from .zero_shot import (
    CALIBRATION_METHOD,
    THRESHOLD_RULE,
    ZeroShotOutcome,
    auc_with_interval,
    calibration_errors,
    ece_table,
    run_zero_shot,
    split_labels,
    zero_shot_figures,
)


def load_clip(model_dir: str | Path, dtype: str | torch.dtype = "float32", quantize: str | None = None,
              compile: bool = False) -> tuple[CMRCLIPModel, CMRCLIPProcessor]:
    """The CMR-CLIP model (in eval mode, in the precision `dtype`, `quantize` and `compile` set:
    `cmr_clip.precision`) and processor saved in `model_dir`, as a user would load them."""
    model = CMRCLIPModel.from_pretrained(model_dir).eval()
    set_precision(model, dtype, quantize, compile)
    return model, CMRCLIPProcessor.from_pretrained(model_dir)


def embed_splits(model, processor, corpus, names: tuple[str, ...], batch_size: int = 32,
                 progress: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """split name -> `embed_split`'s `video` and `text` embeddings, for each of `names`."""
    return {name: embed_split(model, processor, corpus[name], batch_size=batch_size, progress=progress) for name in names}


def evaluation_prompts(corpus, mine_prompts: bool = False) -> PromptSet:
    """The built-in prompt set, or (`mine_prompts`) that set with its finding prompts mined from the corpus's
    training impressions (`prompt_mining.mine_prompt_set`)."""
    base = model_prompt_set(None)
    return mine_prompt_set(corpus["train"]["impression"], base) if mine_prompts else base


def evaluate_held_out(model_dir: str | Path, corpus, reports: str | Path | None = None, batch_size: int = 64,
                      mine_prompts: bool = False) -> dict:
    """The demo's evaluation of the CMR-CLIP saved in `model_dir`: `test_retrieval` (`retrieval_metrics` on the
    test split), `test_zero_shot` (`zero_shot_figures`, with the prompts of `evaluation_prompts`) and
    `test_effective_rank` (`effective_rank` of the test studies' and impressions' embeddings); the prompts
    with the calibration and thresholds fitted on the validation split are saved with the model, so the demo
    model answers calibrated probabilities."""
    model, processor = load_clip(model_dir)
    embedded = embed_splits(model, processor, corpus, ("validation", "test"), batch_size)
    prompts = evaluation_prompts(corpus, mine_prompts)
    outcome = run_zero_shot(model, processor.tokenizer, embedded, corpus, prompts, reports)
    outcome.prompts.save(model_dir)
    test = embedded["test"]
    return {"test_retrieval": retrieval_metrics(test["text"], test["video"]),
            "test_zero_shot": zero_shot_figures(outcome),
            "test_effective_rank": {"video": effective_rank(test["video"]), "text": effective_rank(test["text"])}}


def retrieval_with_intervals(text: torch.Tensor, video: torch.Tensor, resamples: int) -> dict:
    """Recall@K and median rank in both directions; intervals resample the queries."""
    result = {"n": int(len(text))}
    for direction, ranks in match_ranks(text, video).items():
        ranks = ranks.astype(float)
        for k in RECALL_KS:
            result[f"{direction}_R@{k}"] = with_interval(partial(recall_at_k, k=k), ranks, resamples=resamples)
        result[f"{direction}_median_rank"] = with_interval(median_rank, ranks, resamples=resamples)
    return {**result, **chance_recall(len(text), RECALL_KS)}


def lvef_figures(predicted: np.ndarray, truth: np.ndarray, resamples: int) -> dict:
    p, t = known(predicted, truth)
    return {"mae": with_interval(mean_absolute_error, p, t, resamples=resamples),
            "pearson_r": with_interval(pearson_r, p, t, resamples=resamples), "n": int(len(t))}


def zero_shot_with_intervals(outcome: ZeroShotOutcome, resamples: int) -> dict:
    """`evaluate_model`'s zero-shot figures: AUC per finding and the LVEF estimate's error, with intervals."""
    result = {"threshold_rule": THRESHOLD_RULE, "thresholds": outcome.prompts.thresholds,
              "calibration": outcome.prompts.calibration, "ece": calibration_errors(outcome),
              "auc": {name: auc_with_interval(outcome.scores[name], outcome.labels[name], resamples)
                      for name in outcome.scores}}
    if outcome.estimate is not None:
        result["lvef_estimate"] = lvef_figures(*outcome.estimate, resamples)
    return result


def slice_values(split, column: str) -> dict[str, np.ndarray]:
    """Slice name -> row indices, for a column such as vendor or field_strength (empty / NaN left out)."""
    values = np.array([str(v) for v in split[column]], dtype=object)
    return {value: np.flatnonzero(values == value) for value in sorted(set(values)) if value not in ("", "nan")}


def few_shot_results(train_x, train_labels, test_x, test_labels, ks, episodes: int, seed: int) -> dict:
    result = {}
    for probe in ("prototype", "logistic"):
        result[probe] = {}
        for name, truth in test_labels.items():
            pool, known_rows = train_labels[name], ~np.isnan(test_labels[name])
            usable = ~np.isnan(pool)
            if not has_both_classes(truth[known_rows]) or not has_both_classes(pool[usable]):
                continue
            curve = few_shot_curve(train_x[usable], pool[usable], test_x[known_rows], truth[known_rows], probe=probe,
                                   ks=ks, episodes=episodes, seed=seed)
            result[probe][name] = {str(k): v for k, v in curve.items()}
    return result


def evaluate_model(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path, reports: str | Path | None = None,
                   ks=DEFAULT_KS, episodes: int = 20, resamples: int = 1000, plots: bool = True, seed: int = 0,
                   progress: bool = True, save_thresholds: bool = False, calibration: str = CALIBRATION_METHOD,
                   dtype: str | torch.dtype = "float32", quantize: str | None = None, mine_prompts: bool = False,
                   compile: bool = False) -> dict:
    """Evaluate, write `metrics.json`, `summary.md` and (with `plots`) PNGs into `out_dir`; return the metrics.
    The model runs in the precision `dtype`, `quantize` and `compile` set (float32 by default, so that figures are
    comparable across machines; `cmr-clip evaluate` defaults to "auto"); zero-shot uses `evaluation_prompts`."""
    corpus = load_corpus(str(data_dir))
    model, processor = load_clip(model_dir, dtype, quantize, compile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    embedded = embed_splits(model, processor, corpus, ("train", "validation", "test"), progress=progress)
    outcome = run_zero_shot(model, processor.tokenizer, embedded, corpus, evaluation_prompts(corpus, mine_prompts),
                            reports, calibration)
    if save_thresholds:
        outcome.prompts.save(model_dir)
    test = corpus["test"]
    metrics = {
        "model": str(model_dir), "data": str(data_dir), "splits": {name: len(split) for name, split in corpus.items()},
        "interval": f"bootstrap 95% over studies ({resamples} resamples); few-shot: 95% interval of the mean over episodes",
        "zero_shot": zero_shot_with_intervals(outcome, resamples),
    }
    metrics["few_shot"] = few_shot_results(embedded["train"]["video"].numpy(), split_labels(corpus["train"], list(outcome.scores)),
                                           embedded["test"]["video"].numpy(), outcome.labels, ks, episodes, seed)
    metrics["retrieval"] = retrieval_with_intervals(embedded["test"]["text"], embedded["test"]["video"], resamples)
    metrics["slices"] = slice_metrics(test, outcome.scores, outcome.labels, embedded["test"], resamples)
    stability = embedding_stability(model, processor, test, seed=seed)
    metrics["robustness"] = {name: with_interval(np.mean, values, resamples=resamples) for name, values in stability.items()}

    write_json(out / "metrics.json", metrics)
    write_text(out / "summary.md", markdown_summary(metrics))
    if plots:
        write_plots(out, outcome.scores, outcome.labels, metrics, raw_scores=outcome.raw_scores)
    return metrics


def slice_metrics(test, scores: dict, labels: dict, embedded: dict, resamples: int) -> dict:
    result = {}
    for column in ("vendor", "field_strength"):
        result[column] = {}
        for value, rows in slice_values(test, column).items():
            entry = {"n": int(len(rows)),
                     "zero_shot_auc": {name: auc_with_interval(scores[name][rows], labels[name][rows], resamples)
                                       for name in scores}}
            if len(rows) > 1:
                entry["retrieval"] = retrieval_with_intervals(embedded["text"][rows], embedded["video"][rows], resamples)
            result[column][value] = entry
    return result


def _fmt(figure: dict | None, digits: int = 3) -> str:
    if not figure or figure.get("value") is None:
        return "n/a"
    if figure.get("low") is None:
        return f"{figure['value']:.{digits}f}"
    return f"{figure['value']:.{digits}f} [{figure['low']:.{digits}f}, {figure['high']:.{digits}f}]"


def markdown_summary(metrics: dict) -> str:
    lines = ["# CMR-CLIP evaluation", "", f"Model `{metrics['model']}` on `{metrics['data']}`; splits {metrics['splits']}.",
             f"Intervals: {metrics['interval']}.", "", "## Zero-shot (test split)", "",
             f"Thresholds: {metrics['zero_shot']['threshold_rule']}.", "",
             "| finding | AUC [95% CI] | positives / n | threshold |", "| --- | --- | --- | --- |"]
    for name, figure in metrics["zero_shot"]["auc"].items():
        threshold = metrics["zero_shot"]["thresholds"].get(name)
        lines.append(f"| {name} | {_fmt(figure)} | {figure['positives']} / {figure['n']} | "
                     f"{'' if threshold is None else f'{threshold:.3f}'} |")
    if "lvef_estimate" in metrics["zero_shot"]:
        lvef = metrics["zero_shot"]["lvef_estimate"]
        lines += ["", f"LVEF estimate from prompts: MAE {_fmt(lvef['mae'])} points, Pearson r {_fmt(lvef['pearson_r'])} (n={lvef['n']})."]
    lines += ["", "Calibration (expected calibration error, 10 equal-width bins, test split):", "",
              ece_table(metrics["zero_shot"]["ece"])]
    lines += ["", "## Few-shot (AUC, mean [95% CI] over episodes)", ""]
    for probe, findings in metrics["few_shot"].items():
        for name, curve in findings.items():
            cells = ", ".join(f"k={k}: {v['auc']['mean']:.2f} [{v['auc']['low']:.2f}, {v['auc']['high']:.2f}]" for k, v in curve.items())
            lines.append(f"- {probe}, {name}: {cells}")
    retrieval = metrics["retrieval"]
    lines += ["", f"## Retrieval (test split, n={retrieval['n']})", "", "| direction | R@1 | R@5 | R@10 | median rank |",
              "| --- | --- | --- | --- | --- |"]
    for direction in ("text_to_study", "study_to_text"):
        lines.append(f"| {direction} | " + " | ".join(_fmt(retrieval[f"{direction}_R@{k}"]) for k in RECALL_KS)
                     + f" | {_fmt(retrieval[f'{direction}_median_rank'])} |")
    lines += ["", "## Slices (zero-shot AUC)", ""]
    for column, values in metrics["slices"].items():
        for value, entry in values.items():
            aucs = ", ".join(f"{n} {_fmt(f)}" for n, f in entry["zero_shot_auc"].items() if f["value"] is not None)
            lines.append(f"- {column}={value} (n={entry['n']}): {aucs or 'no finding with both classes'}")
    robustness = metrics["robustness"]
    lines += ["", "## Robustness (cosine to the original embedding)", "",
              f"- frames shuffled within each view: {_fmt(robustness['shuffle'], 4)}",
              f"- 25% of frames dropped: {_fmt(robustness['drop'], 4)}", ""]
    return "\n".join(lines)
