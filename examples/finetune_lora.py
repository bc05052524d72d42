"""From a prepared, labelled corpus to a saved LoRA adapter and a prediction.

    cmr-clip demo --output-dir cmr-clip-demo
    python examples/finetune_lora.py cmr-clip-demo cmr-clip-demo/corpus lora-out --labels lv_hypertrophy lge

The script fine-tunes LoRA adapters on the video tower of a trained CMR-CLIP model (plus a fresh head) for
the given findings, prints the trainable share of parameters and the adapter's size on disk, loads the
adapter onto a fresh base model with `PeftModel.from_pretrained`, checks that merging it
(`merge_and_unload`) leaves the logits unchanged, and prints the probability of each finding for the first
held-out study next to its true labels. The per-label metrics are in `OUT/metrics.json`.
"""

import argparse
import json
from pathlib import Path

import torch
from datasets import load_from_disk

from cmr_clip.data.collate import StudyCollator
from cmr_clip.data.corpus import load_study_processor
from cmr_clip.data.dataset import LabelledStudies
from cmr_clip.training import FinetuneConfig, finetune, load_finetuned
from cmr_clip.training.tasks.classification import split_targets


def first_held_out_study(data_dir: str, labels: list[str], label_names: list[str], problem_type: str) -> dict:
    corpus = load_from_disk(data_dir)
    split = corpus["test" if "test" in corpus else "validation"].select([0])
    studies = LabelledStudies(split, split_targets(split, problem_type, labels, label_names), False, 0, None)
    batch = StudyCollator(load_study_processor(data_dir))([studies[0]])
    return {"study_id": split[0]["study_id"], **batch}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a trained CMR-CLIP directory")
    parser.add_argument("data", help="a prepared corpus with a labels column")
    parser.add_argument("out", help="where the adapter and metrics.json go")
    parser.add_argument("--labels", nargs="+", default=["lv_hypertrophy", "lge"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lora-r", type=int, default=8)
    args = parser.parse_args(argv)

    metrics = finetune(FinetuneConfig(model_dir=args.model, data_dir=args.data, labels=args.labels,
                                      output_dir=args.out, lora=True, lora_r=args.lora_r, epochs=args.epochs,
                                      progress=False))
    share = metrics["trainable_parameters"] / metrics["total_parameters"]
    adapter_bytes = (Path(args.out) / "adapter_model.safetensors").stat().st_size
    print(f"trainable parameters: {metrics['trainable_parameters']} of {metrics['total_parameters']} ({share:.2%})")
    print(f"adapter on disk: {adapter_bytes / 1e6:.2f} MB")

    study = first_held_out_study(args.data, args.labels, metrics["labels"], metrics["problem_type"])
    model = load_finetuned(args.out).eval()  # base model + adapter (PeftModel)
    with torch.no_grad():
        logits = model(pixel_values_videos=study["pixel_values_videos"]).logits
        merged_logits = model.merge_and_unload()(pixel_values_videos=study["pixel_values_videos"]).logits
    max_difference = float((logits - merged_logits).abs().max())
    print(f"merged vs adapter logits: max difference {max_difference:.2e}")
    if metrics["problem_type"] == "single_label_classification":
        probabilities = logits.softmax(-1)[0]
    else:
        probabilities = logits.sigmoid()[0]
    prediction = {name: round(float(p), 3) for name, p in zip(metrics["labels"], probabilities)}
    print(f"study {study['study_id']}: predicted {json.dumps(prediction)}; true {study['labels'][0].tolist()}")
    return {"metrics": metrics, "prediction": prediction, "adapter_bytes": adapter_bytes,
            "merge_difference": max_difference}


if __name__ == "__main__":
    main()
