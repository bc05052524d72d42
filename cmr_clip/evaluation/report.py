"""`evaluate_model`: every figure of a CMR-CLIP model on a prepared corpus, written as metrics.json, a
markdown summary and PNG plots (what `cmr-clip evaluate` runs).

- zero-shot: thresholds by Youden's J on the validation split, ROC AUC per finding on the test split,
  and the LVEF estimate's MAE and correlation when a reports file with measurements is given;
- few-shot: prototype and logistic probes on frozen embeddings (training split as the support pool,
  test split scored), k-shot episodes;
- retrieval: Recall@K and median rank between test studies and their impressions;
- the zero-shot AUCs and retrieval again for each vendor and field strength in the test split;
- robustness: cosine of each test embedding to itself after frames are shuffled within a view or 25%
  are dropped.
Zero-shot, retrieval and robustness figures carry a bootstrap 95% interval over studies (queries for
retrieval); few-shot figures carry the 95% interval of the mean over episodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..embeddings import embed_split
from ..privacy import write_json, write_text
from .few_shot import DEFAULT_KS, few_shot_curve
from .retrieval import DEFAULT_KS as RECALL_KS
from .retrieval import ranks_of_matches
from .stats import bootstrap_interval
from .zero_shot import (
    THRESHOLD_RULE,
    calibrate,
    estimates,
    finding_scores,
    read_measurements,
    split_labels,
)


def auc_with_interval(scores: np.ndarray, truth: np.ndarray, resamples: int) -> dict:
    from sklearn.metrics import roc_auc_score

    keep = ~np.isnan(truth)
    s, y = scores[keep], truth[keep].astype(int)
    figure = bootstrap_interval(lambda a, b: roc_auc_score(b, a) if len(np.unique(b)) == 2 else None, s, y,
                                resamples=resamples)
    return {**figure, "positives": int(y.sum()), "n": int(len(y))}


def retrieval_with_intervals(text: torch.Tensor, video: torch.Tensor, resamples: int) -> dict:
    """Recall@K and median rank in both directions; intervals resample the queries."""
    similarity = text @ video.T
    result = {"n": int(len(text))}
    for direction, matrix in (("text_to_study", similarity), ("study_to_text", similarity.T)):
        ranks = ranks_of_matches(matrix).numpy().astype(float)
        for k in RECALL_KS:
            result[f"{direction}_R@{k}"] = bootstrap_interval(lambda r, k=k: float(np.mean(r <= k)), ranks, resamples=resamples)
        result[f"{direction}_median_rank"] = bootstrap_interval(lambda r: float(np.median(r)), ranks, resamples=resamples)
    result.update({f"chance_R@{k}": min(1.0, k / len(text)) for k in RECALL_KS})
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
            pool, known = train_labels[name], ~np.isnan(test_labels[name])
            usable = ~np.isnan(pool)
            if len(np.unique(truth[known])) < 2 or len(np.unique(pool[usable])) < 2:
                continue
            curve = few_shot_curve(train_x[usable], pool[usable], test_x[known], truth[known], probe=probe, ks=ks,
                                   episodes=episodes, seed=seed)
            result[probe][name] = {str(k): v for k, v in curve.items()}
    return result


def evaluate_model(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path, reports: str | Path | None = None,
                   ks=DEFAULT_KS, episodes: int = 20, resamples: int = 1000, plots: bool = True, seed: int = 0,
                   progress: bool = True, save_thresholds: bool = False) -> dict:
    """Evaluate, write `metrics.json`, `summary.md` and (with `plots`) PNGs into `out_dir`; return the metrics."""
    from datasets import load_from_disk

    from ..modeling import CMRCLIPModel
    from ..pipelines.prompts import model_prompt_set
    from ..processing import CMRCLIPProcessor
    from .robustness import embedding_stability

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = CMRCLIPModel.from_pretrained(model_dir).eval()
    processor = CMRCLIPProcessor.from_pretrained(model_dir)
    corpus = load_from_disk(str(data_dir))
    embedded = {name: embed_split(model, processor, corpus[name], progress=progress) for name in ("train", "validation", "test")}

    prompts = calibrate(model, processor.tokenizer, embedded["validation"]["video"], corpus["validation"], model_prompt_set(None))
    if save_thresholds:
        prompts.save(model_dir)
    test = corpus["test"]
    scores = finding_scores(model, processor.tokenizer, embedded["test"]["video"], prompts)
    labels = split_labels(test, list(scores))
    metrics = {
        "model": str(model_dir), "data": str(data_dir), "splits": {name: len(split) for name, split in corpus.items()},
        "interval": f"bootstrap 95% over studies ({resamples} resamples); few-shot: 95% interval of the mean over episodes",
        "zero_shot": {"threshold_rule": THRESHOLD_RULE, "thresholds": prompts.thresholds,
                      "auc": {name: auc_with_interval(scores[name], labels[name], resamples) for name in scores}},
    }
    if reports is not None:
        truth = read_measurements(reports, list(test["study_id"]), "lvef")
        predicted = estimates(model, processor.tokenizer, embedded["test"]["video"], prompts, "lvef")
        metrics["zero_shot"]["lvef_estimate"] = lvef_figures(predicted, truth, resamples)
    metrics["few_shot"] = few_shot_results(embedded["train"]["video"].numpy(), split_labels(corpus["train"], list(scores)),
                                           embedded["test"]["video"].numpy(), labels, ks, episodes, seed)
    metrics["retrieval"] = retrieval_with_intervals(embedded["test"]["text"], embedded["test"]["video"], resamples)
    metrics["slices"] = slice_metrics(test, scores, labels, embedded["test"], resamples)
    stability = embedding_stability(model, processor, test, seed=seed)
    metrics["robustness"] = {name: bootstrap_interval(np.mean, values, resamples=resamples) for name, values in stability.items()}

    write_json(out / "metrics.json", metrics)
    write_text(out / "summary.md", markdown_summary(metrics))
    if plots:
        from .plots import write_plots

        write_plots(out, scores, labels, metrics)
    return metrics


def lvef_figures(predicted: np.ndarray, truth: np.ndarray, resamples: int) -> dict:
    from sklearn.metrics import mean_absolute_error

    keep = ~np.isnan(truth)
    p, t = predicted[keep], truth[keep]
    return {"mae": bootstrap_interval(mean_absolute_error, t, p, resamples=resamples),
            "pearson_r": bootstrap_interval(lambda a, b: np.corrcoef(a, b)[0, 1], p, t, resamples=resamples),
            "n": int(keep.sum())}


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
