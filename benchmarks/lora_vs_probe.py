"""LoRA fine-tuning against the frozen-embedding probe, on the finding the probe finds hardest.

    cmr-clip demo --out cmr-clip-demo
    python benchmarks/lora_vs_probe.py cmr-clip-demo cmr-clip-demo/corpus --out lora-vs-probe

The probe is the zero-shot issue's logistic regression on frozen, normalised study embeddings
(`cmr_clip.evaluation.few_shot.logistic_probe`), fitted on every training study of the corpus. Among the
findings with at least `--min-positives` positive studies in both validation and test, the one with the
lowest probe test AUC is the hardest; a LoRA fine-tune of the same model (adapters on qkv, out_proj, fc1,
fc2 and a fresh head, loss weighted against imbalance) is then trained on that finding alone and both are
scored on the test split, with bootstrap 95% intervals of the AUC. Printed, and written to
`OUT/comparison.json`, with the ratio of the two AUCs' distances above chance (0.5).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from datasets import load_from_disk
from sklearn.metrics import roc_auc_score

from cmr_clip import CMRCLIPModel
from cmr_clip.evaluation.few_shot import logistic_probe
from cmr_clip.evaluation.stats import bootstrap_interval
from cmr_clip.finetune import FinetuneConfig, finetune, load_finetuned
from cmr_clip.finetune.loop import LabelledCollator, LabelledStudies
from cmr_clip.training.loop import load_study_processor


@torch.no_grad()
def split_outputs(model, split, study_processor, batch_size: int = 16) -> torch.Tensor:
    """The model's output per study of a split: study embeddings of a CMRCLIPModel, logits of a classifier."""
    studies = LabelledStudies(split, np.zeros(len(split)), False, 0, None)
    collate = LabelledCollator(study_processor)
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--out", default="lora-vs-probe")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--min-positives", type=int, default=4)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    corpus = load_from_disk(args.data)
    study_processor = load_study_processor(args.data)
    clip = CMRCLIPModel.from_pretrained(args.model).eval()
    embeddings = {name: split_outputs(clip, corpus[name], study_processor).numpy() for name in ("train", "test")}
    labels = {name: finding_labels(corpus[name]) for name in ("train", "validation", "test")}

    probe_auc = {}
    for finding, test_y in labels["test"].items():
        if min(test_y.sum(), labels["validation"][finding].sum()) < args.min_positives:
            continue
        scores = logistic_probe(embeddings["train"], labels["train"][finding], embeddings["test"])
        probe_auc[finding] = (float(roc_auc_score(test_y, scores)), scores)
    hardest = min(probe_auc, key=lambda f: probe_auc[f][0])
    print("probe test AUC per finding: " + ", ".join(f"{f} {a:.3f}" for f, (a, _) in probe_auc.items()))
    print(f"hardest for the probe: {hardest}")

    out = Path(args.out)
    metrics = finetune(FinetuneConfig(model_dir=args.model, data_dir=args.data, labels=[hardest],
                                      output_dir=str(out / "adapter"), lora=True, lora_r=args.lora_r,
                                      epochs=args.epochs, learning_rate=args.learning_rate, augment=args.augment,
                                      progress=False))
    tuned = load_finetuned(str(out / "adapter")).eval()
    lora_scores = split_outputs(tuned, corpus["test"], study_processor).numpy()
    truth = labels["test"][hardest]
    result = {
        "finding": hardest,
        "test_studies": int(len(truth)), "test_positives": int(truth.sum()),
        "probe_auc": bootstrap_interval(roc_auc_score, truth, probe_auc[hardest][1]),
        "lora_auc": bootstrap_interval(roc_auc_score, truth, lora_scores),
        "lora_validation_auc": metrics["evaluation"]["validation"]["per_label"][hardest]["auc"],
        "lora_f1_at_validation_threshold": metrics["evaluation"]["test"]["per_label"][hardest]["f1"],
        "trainable_share": metrics["trainable_parameters"] / metrics["total_parameters"],
        "adapter_bytes": (out / "adapter" / "adapter_model.safetensors").stat().st_size,
        "probe_auc_all_findings": {f: a for f, (a, _) in probe_auc.items()},
    }
    lift = (result["lora_auc"]["value"] - 0.5) / max(result["probe_auc"]["value"] - 0.5, 1e-6)
    result["ratio_above_chance"] = lift
    for name in ("probe", "lora"):
        auc = result[f"{name}_auc"]
        print(f"{name:>5} test AUC on {hardest}: {auc['value']:.3f} (95% CI {auc['low']:.3f}-{auc['high']:.3f})")
    print(f"LoRA / probe AUC above chance: {lift:.2f}x; trainable share {result['trainable_share']:.2%}; "
          f"adapter {result['adapter_bytes'] / 1e6:.2f} MB")
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
