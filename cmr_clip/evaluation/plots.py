"""PNG plots of an evaluation (needs the `plot` extra, matplotlib): zero-shot ROC per finding, few-shot AUC
curves, retrieval Recall@K overall and per vendor and field strength."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'cmr-clip[plot]', or pass --no-plots.") from error
    return plt


def write_plots(out: Path, scores: dict, labels: dict, metrics: dict) -> list[Path]:
    return [roc_plot(out / "zero_shot_roc.png", scores, labels, metrics["zero_shot"]["auc"]),
            few_shot_plot(out / "few_shot.png", metrics["few_shot"]),
            recall_plot(out / "retrieval_recall.png", metrics)]


def roc_plot(path: Path, scores: dict, labels: dict, aucs: dict) -> Path:
    from sklearn.metrics import roc_curve

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
    from .retrieval import DEFAULT_KS

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


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
