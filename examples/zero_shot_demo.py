"""Zero-shot findings with the demo's model on its held-out synthetic studies.

    cmr-clip demo --output-dir cmr-clip-demo
    python examples/zero_shot_demo.py cmr-clip-demo

For every test study of the demo's corpus, the `zero-shot-cmr` pipeline scores each finding of the
built-in prompt set (and estimates LVEF). The script then computes the same probabilities directly from
the model's embeddings, by the definition (softmax of the study's scaled cosines to the mean positive and
mean negative prompt embedding; for a finding whose prompts are distinct patterns, `match: any` as LGE's, to the
closest prompt of each side), checks that the two agree, and prints the AUC per finding against the
cohort's labels and the LVEF estimate's error against the measured EF.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import load_from_disk
from sklearn.metrics import mean_absolute_error, roc_auc_score
from transformers import pipeline

from cmr_clip import CMRCLIPModel, CMRCLIPProcessor, PromptSet  # importing cmr_clip registers zero-shot-cmr
from cmr_clip.data import StudyCollator, StudyTextDataset


@torch.no_grad()
def test_pixels(model, processor, split) -> torch.Tensor:
    collate = StudyCollator(processor.feature_extractor)
    return collate([StudyTextDataset(split)[i] for i in range(len(split))])["pixel_values_videos"]


@torch.no_grad()
def direct_probabilities(model, processor, pixels: torch.Tensor, prompts: PromptSet) -> dict[str, np.ndarray]:
    videos = torch.nn.functional.normalize(model.get_video_features(pixel_values_videos=pixels).pooler_output, dim=-1)

    def similarity(texts, match):
        tokens = processor(text=texts)
        embeds = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        embeds = torch.nn.functional.normalize(embeds, dim=-1)
        if match == "any":
            return (videos @ embeds.T).max(-1).values
        return videos @ torch.nn.functional.normalize(embeds.mean(0), dim=-1)

    scale = model.logit_scale_value()
    result = {}
    for name, ensembles in prompts.findings.items():
        match = ensembles.get("match", "ensemble")
        logits = scale * torch.stack([similarity(ensembles["positive"], match), similarity(ensembles["negative"], match)], 1)
        result[name] = logits.softmax(-1)[:, 0].numpy()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir", help="the folder `cmr-clip demo --output-dir` wrote")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    demo = Path(args.demo_dir)
    model, processor = CMRCLIPModel.from_pretrained(demo).eval(), CMRCLIPProcessor.from_pretrained(demo)
    test = load_from_disk(str(demo / "corpus"))["test"]
    prompts = PromptSet.load()  # the built-in set, so the figures do not depend on saved thresholds

    pixels = test_pixels(model, processor, test)
    # float32 as the direct computation below ("auto" would run bfloat16 on a CPU or GPU with native bf16).
    classify = pipeline("zero-shot-cmr", model=str(demo), prompt_set=prompts, dtype="float32")
    answers = classify([{"pixel_values_videos": p} for p in pixels], findings=True, estimate="lvef", batch_size=8)
    from_pipeline = {name: np.array([next(f["score"] for f in a["findings"] if f["finding"] == name) for a in answers])
                     for name in prompts.findings}
    direct = direct_probabilities(model, processor, pixels, prompts)
    largest_difference = max(float(np.abs(from_pipeline[n] - direct[n]).max()) for n in prompts.findings)

    labels = [json.loads(text) for text in test["labels"]]
    aucs = {}
    for name in (n for n in prompts.findings if n in labels[0]):
        truth = np.array([row[name] for row in labels], dtype=int)
        aucs[name] = float(roc_auc_score(truth, direct[name])) if len(set(truth)) == 2 else None
    measured = {row["study_id"]: row["measurements"]["lvef"]
                for row in map(json.loads, (demo / "cohort" / "reports.jsonl").read_text().splitlines())}
    truth_ef = np.array([measured[sid] for sid in test["study_id"]])
    estimated_ef = np.array([a["estimates"]["lvef"] for a in answers])
    figures = {"test_studies": len(test), "auc": aucs, "pipeline_vs_direct_max_abs_difference": largest_difference,
               "lvef_mae": float(mean_absolute_error(truth_ef, estimated_ef)),
               "lvef_pearson_r": float(np.corrcoef(truth_ef, estimated_ef)[0, 1])}

    print(f"zero-shot on {len(test)} held-out synthetic studies (built-in prompt set)")
    for name, auc in aucs.items():
        positives = sum(row[name] for row in labels)
        print(f"  {name:<22} AUC {'n/a ' if auc is None else f'{auc:.3f}'}  ({positives} positive)")
    print(f"  LVEF estimate: MAE {figures['lvef_mae']:.1f} points, Pearson r {figures['lvef_pearson_r']:.2f}")
    print(f"  pipeline vs direct computation: largest difference {largest_difference:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if largest_difference < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
