"""PNG plots of an evaluation (needs the `plot` extra, matplotlib): zero-shot ROC per finding, reliability
diagrams of the zero-shot probabilities before and after calibration, few-shot AUC curves, retrieval Recall@K overall and per vendor and field strength, zero-shot AUC per vendor and field
strength."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from .classification import labelled, reliability_bins
from .retrieval import DEFAULT_KS


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'cmr-clip[plot]', or pass --no-plots.") from error
    return plt


def write_plots(out: Path, scores: dict, labels: dict, metrics: dict, raw_scores: dict | None = None) -> list[Path]:
    reliability = [reliability_plot(out / "zero_shot_reliability.png", raw_scores, scores, labels)] if raw_scores else []
    return reliability + [roc_plot(out / "zero_shot_roc.png", scores, labels, metrics["zero_shot"]["auc"]),
            few_shot_plot(out / "few_shot.png", metrics["few_shot"]),
            recall_plot(out / "retrieval_recall.png", metrics),
            slice_auc_plot(out / "zero_shot_auc_slices.png", metrics["slices"])]


def roc_plot(path: Path, scores: dict, labels: dict, aucs: dict) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 6))
    for name, values in scores.items():
        keep = ~np.isnan(labels[name])
        if aucs[name]["value"] is None:
            continue
        fpr, tpr, _ = roc_curve(labels[name][keep].astype(int), values[keep])
        axis.plot(fpr, tpr, label=f"{name} (AUC {aucs[name]['value']:.2f})")
    axis.plot([0, 1], [0, 1], "k:", linewidth=1)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="Zero-shot ROC (test split)")
    axis.legend(fontsize=8, loc="lower right")
    return _save(figure, path, plt)


def reliability_plot(path: Path, raw_scores: dict, scores: dict, labels: dict, bins: int = 10) -> Path:
    """One reliability diagram per finding: observed frequency against mean predicted probability per bin, before
    and after calibration, with the diagonal of perfect calibration (point size: studies in the bin)."""
    plt = _pyplot()
    names = list(scores)
    columns = min(4, max(1, len(names)))
    rows = -(-len(names) // columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        for values, label, marker in ((raw_scores[name], "raw", "o"), (scores[name], "calibrated", "s")):
            table = reliability_bins(*labelled(values, labels[name]), bins=bins)
            axis.plot([b["confidence"] for b in table], [b["frequency"] for b in table], marker=marker, label=label)
        axis.plot([0, 1], [0, 1], "k:", linewidth=1)
        axis.set(title=name, xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed frequency")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    return _save(figure, path, plt)


def few_shot_plot(path: Path, few_shot: dict) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(few_shot), figsize=(6 * len(few_shot), 4.5), squeeze=False)
    for axis, (probe, findings) in zip(axes[0], few_shot.items()):
        for name, curve in findings.items():
            ks = [int(k) for k in curve]
            mean = [curve[str(k)]["auc"]["mean"] for k in ks]
            axis.errorbar(ks, mean, yerr=[[m - curve[str(k)]["auc"]["low"] for k, m in zip(ks, mean)],
                                          [curve[str(k)]["auc"]["high"] - m for k, m in zip(ks, mean)]],
                          marker="o", capsize=3, label=name)
        axis.set_xscale("log", base=2)
        axis.axhline(0.5, color="k", linestyle=":", linewidth=1)
        axis.set(xlabel="k (studies per class)", ylabel="AUC", title=f"Few-shot, {probe} probe", ylim=(0.3, 1.02))
        axis.legend(fontsize=8)
    return _save(figure, path, plt)


def recall_plot(path: Path, metrics: dict) -> Path:
    plt = _pyplot()
    groups = [("all", metrics["retrieval"])] + [
        (f"{column}={value}", entry["retrieval"]) for column, values in metrics["slices"].items()
        for value, entry in values.items() if "retrieval" in entry]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, retrieval in groups:
        axis.plot(DEFAULT_KS, [retrieval[f"text_to_study_R@{k}"]["value"] for k in DEFAULT_KS], marker="o",
                  label=f"{name} (n={retrieval['n']})")
    axis.set(xlabel="K", ylabel="Recall@K (text -> study)", title="Retrieval on the test split", ylim=(0, 1.02))
    axis.legend(fontsize=8)
    return _save(figure, path, plt)


def slice_auc_plot(path: Path, slices: dict) -> Path:
    """Grouped bars: zero-shot AUC (with its interval) per finding, one bar per vendor or field strength."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(slices), 1, figsize=(9, 3.5 * len(slices)), squeeze=False)
    for axis, (column, values) in zip(axes[:, 0], slices.items()):
        findings = list(next(iter(values.values()))["zero_shot_auc"]) if values else []
        width = 0.8 / max(1, len(values))
        for i, (value, entry) in enumerate(values.items()):
            figures = [entry["zero_shot_auc"][name] for name in findings]
            heights = [f["value"] if f["value"] is not None else np.nan for f in figures]
            errors = [[h - f["low"] if f["low"] is not None else 0 for h, f in zip(heights, figures)],
                      [f["high"] - h if f["high"] is not None else 0 for h, f in zip(heights, figures)]]
            axis.bar(np.arange(len(findings)) + i * width, heights, width, yerr=errors, capsize=2,
                     label=f"{value} (n={entry['n']})")
        axis.axhline(0.5, color="k", linestyle=":", linewidth=1)
        axis.set_xticks(np.arange(len(findings)) + 0.4 - width / 2, findings, rotation=20, fontsize=8)
        axis.set(ylabel="AUC", ylim=(0, 1.05), title=f"Zero-shot AUC by {column} (missing bar: one class only)")
        axis.legend(fontsize=8)
    return _save(figure, path, plt)


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
