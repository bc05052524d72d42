"""LoRA fine-tuning against the frozen-embedding probe, on the finding the probe finds hardest.

    cmr-clip demo --output-dir cmr-clip-demo
    python benchmarks/lora_vs_probe.py cmr-clip-demo cmr-clip-demo/corpus --output-dir lora-vs-probe [--finding F]

The probe is the zero-shot issue's logistic regression on frozen, normalised study embeddings
(`cmr_clip.evaluation.few_shot.logistic_probe`), fitted on every training study of the corpus. Among the
findings with at least `--min-positives` positive studies in both validation and test, the one with the
lowest probe test AUC is the hardest (or `--finding` names one); LoRA fine-tunes of the same model
(adapters on qkv, out_proj, fc1, fc2 and a head first fitted on the frozen embeddings, `--head-init probe`),
one per `--seeds`, are trained on that finding alone and all are scored on the test split with the same
metric: AUC with a bootstrap 95% interval, and the paired bootstrap interval of the difference LoRA - probe, per seed
and for the seeds' mean AUC (the same resampled test studies for every seed). Printed, and written to `OUT/comparison.json`,
with the hyper-parameters and the wall time of each run.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from datasets import load_from_disk
from sklearn.metrics import roc_auc_score

from cmr_clip import CMRCLIPModel
from cmr_clip.data.collate import StudyCollator
from cmr_clip.data.corpus import load_study_processor
from cmr_clip.data.dataset import LabelledStudies
from cmr_clip.evaluation.few_shot import logistic_probe
from cmr_clip.evaluation.intervals import with_interval
from cmr_clip.training import FinetuneConfig, finetune, load_finetuned


@torch.no_grad()
def split_outputs(model, split, study_processor, batch_size: int = 16) -> torch.Tensor:
    """The model's output per study of a split: study embeddings of a CMRCLIPModel, logits of a classifier."""
    studies = LabelledStudies(split, np.zeros(len(split)), False, 0, None)
    collate = StudyCollator(study_processor)
    outputs = []
    for start in range(0, len(studies), batch_size):
        batch = collate([studies[i] for i in range(start, min(start + batch_size, len(studies)))])
        if isinstance(model, CMRCLIPModel):
            outputs.append(model.get_video_features(pixel_values_videos=batch["pixel_values_videos"]).pooler_output)
        else:
            outputs.append(model(pixel_values_videos=batch["pixel_values_videos"]).logits[:, 0])
    return torch.cat(outputs)


def finding_labels(split) -> dict[str, np.ndarray]:
    records = [json.loads(r) for r in split["labels"]]
    return {k: np.array([int(r[k]) for r in records]) for k, v in records[0].items() if isinstance(v, bool)}


def auc_difference(truth: np.ndarray, probe: np.ndarray, tuned: np.ndarray) -> float:
    return roc_auc_score(truth, tuned) - roc_auc_score(truth, probe)


def mean_auc_difference(truth: np.ndarray, probe: np.ndarray, *tuned: np.ndarray) -> float:
    """The seeds' mean LoRA AUC minus the probe's, on the same (resampled) studies."""
    return float(np.mean([roc_auc_score(truth, scores) for scores in tuned])) - roc_auc_score(truth, probe)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--output-dir", default="lora-vs-probe")
    parser.add_argument("--finding", default=None, help="compare on this finding instead of the probe's hardest")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--classifier-hidden-size", type=int, default=0)
    parser.add_argument("--balance", choices=["weights", "none"], default="weights")
    parser.add_argument("--head-init", choices=["fresh", "probe"], default="probe",
                        help="probe: fit the head on frozen embeddings before tuning the adapters (LP-FT)")
    parser.add_argument("--min-positives", type=int, default=4)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args(argv)
    corpus = load_from_disk(args.data)
    study_processor = load_study_processor(args.data)
    clip = CMRCLIPModel.from_pretrained(args.model).eval()
    embeddings = {name: split_outputs(clip, corpus[name], study_processor).numpy() for name in ("train", "test")}
    labels = {name: finding_labels(corpus[name]) for name in ("train", "validation", "test")}

    probe_auc = {}
    for finding, test_y in labels["test"].items():
        if finding != args.finding and min(test_y.sum(), labels["validation"][finding].sum()) < args.min_positives:
            continue
        scores = logistic_probe(embeddings["train"], labels["train"][finding], embeddings["test"])
        probe_auc[finding] = (float(roc_auc_score(test_y, scores)), scores)
    hardest = args.finding or min(probe_auc, key=lambda f: probe_auc[f][0])
    print("probe test AUC per finding: " + ", ".join(f"{f} {a:.3f}" for f, (a, _) in probe_auc.items()))
    print(f"compared on: {hardest}" + ("" if args.finding else " (hardest for the probe)"))
    truth, probe_scores = labels["test"][hardest], probe_auc[hardest][1]

    out = Path(args.output_dir)
    hyper = {"lora_r": args.lora_r, "learning_rate": args.learning_rate, "epochs": args.epochs,
             "batch_size": args.batch_size, "classifier_hidden_size": args.classifier_hidden_size,
             "balance": args.balance, "augment": args.augment, "head_init": args.head_init}
    runs, seed_scores = [], []
    for seed in args.seeds:
        run_dir = out / f"adapter-seed{seed}"
        start = time.perf_counter()
        metrics = finetune(FinetuneConfig(model_dir=args.model, data_dir=args.data, labels=[hardest],
                                          output_dir=str(run_dir), lora=True, seed=seed, progress=False, **hyper))
        wall = time.perf_counter() - start
        tuned = load_finetuned(str(run_dir)).eval()
        scores = split_outputs(tuned, corpus["test"], study_processor).numpy()
        seed_scores.append(scores)
        runs.append({
            "seed": seed, "wall_s": wall,
            "lora_auc": with_interval(roc_auc_score, truth, scores),
            "lora_minus_probe": with_interval(auc_difference, truth, probe_scores, scores),
            "lora_validation_auc": metrics["evaluation"]["validation"]["per_label"][hardest]["auc"],
            "lora_f1_at_validation_threshold": metrics["evaluation"]["test"]["per_label"][hardest]["f1"],
            "train_loss": [h["train_loss"] for h in metrics["history"]],
        })
        auc, diff = runs[-1]["lora_auc"], runs[-1]["lora_minus_probe"]
        print(f"seed {seed}: LoRA test AUC {auc['value']:.3f} (95% CI {auc['low']:.3f}-{auc['high']:.3f}), "
              f"LoRA - probe {diff['value']:+.3f} (95% CI {diff['low']:+.3f} to {diff['high']:+.3f}), {wall:.0f} s")
    lora_aucs = np.array([r["lora_auc"]["value"] for r in runs])
    result = {
        "finding": hardest, "test_studies": int(len(truth)), "test_positives": int(truth.sum()),
        "probe_auc": with_interval(roc_auc_score, truth, probe_scores),
        "lora_auc_mean": float(lora_aucs.mean()), "lora_auc_std": float(lora_aucs.std()),
        "lora_mean_minus_probe": with_interval(mean_auc_difference, truth, probe_scores, *seed_scores),
        "runs": runs, "hyper_parameters": hyper,
        "trainable_share": metrics["trainable_parameters"] / metrics["total_parameters"],
        "adapter_bytes": (out / f"adapter-seed{args.seeds[-1]}" / "adapter_model.safetensors").stat().st_size,
        "probe_auc_all_findings": {f: a for f, (a, _) in probe_auc.items()},
    }
    probe = result["probe_auc"]
    print(f"probe test AUC on {hardest}: {probe['value']:.3f} (95% CI {probe['low']:.3f}-{probe['high']:.3f})")
    print(f" LoRA test AUC on {hardest}: {result['lora_auc_mean']:.3f} +- {result['lora_auc_std']:.3f} over seeds "
          f"{args.seeds}; trainable share {result['trainable_share']:.2%}; adapter {result['adapter_bytes'] / 1e6:.2f} MB")
    diff = result["lora_mean_minus_probe"]
    if diff["low"] is not None:
        print(f"mean over seeds LoRA - probe {diff['value']:+.3f} (paired 95% CI {diff['low']:+.3f} to {diff['high']:+.3f})")
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
