"""Inference precision on a trained CMR-CLIP: speed and agreement of bfloat16 and int8 against float32, in one run.

First, one matrix product of ViT-B MLP shape in bfloat16 and in int8 against float32 (the CPU's kernels alone).
Then, for each precision (float32, bfloat16, float32+int8, bfloat16+int8; `cmr_clip.precision`), on a copy of the
same trained weights:
  - speed: the video tower embedding one batch of test-split studies (`--batch`), the median of `--repeats`
    timed runs after one untimed run, the precisions alternating within every repeat so that a change in
    background load hits all alike; reported as float32's median over this precision's (x faster);
  - cosine of every test-split study embedding to its float32 embedding (mean and minimum);
  - zero-shot: how many yes/no decisions (finding x study, for the findings with a threshold in the model's
    `zero_shot_prompts.json`) differ from float32's, and the ROC AUC per finding on the test split.
`--size vitb` instead times a randomly initialised ViT-B/16 video tower at 16 x 112 x 112 (speed and cosine
only: random weights have no findings), the size where reduced precision pays most. `--compile` adds each
precision again with its video tower through torch.compile (`compile=True`), timed after its first call
(which compiles: that call's seconds are reported apart).

    python benchmarks/inference_precision.py --model cmr-clip-demo              # corpus: cmr-clip-demo/corpus
    python benchmarks/inference_precision.py --model cmr-clip-demo --size vitb --batch 2
    python benchmarks/inference_precision.py --size vitb --batch 2 --compile --precisions float32 bfloat16 int8

Like the `cmr-clip` command, it first has glibc's malloc keep freed memory (`cmr_clip.allocator`; the header says
whether it did): with glibc's defaults float32 pays more for faulting each batch's memory in again than bfloat16,
and its time moves by up to a quarter between runs (`benchmarks/allocator.py` measures that).

Targets (issue 16): bfloat16 at least 1.8x with cosine at least 0.999, int8 at least 2x with cosine at least
0.99. int8 and bfloat16 are fast only where the CPU has AVX512-VNNI and AVX512-BF16 or AMX: the header line
says which the machine has.
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cmr_clip import CMRCLIPModel, CMRCLIPProcessor
from cmr_clip.allocator import keep_freed_memory
from cmr_clip.data.collate import StudyCollator
from cmr_clip.data.corpus import load_corpus
from cmr_clip.data.dataset import StudyTextDataset
from cmr_clip.embeddings import encode_videos, embed_split
from cmr_clip.evaluation.zero_shot import finding_aucs, finding_scores, split_labels
from cmr_clip.modeling import CMRCLIPConfig
from cmr_clip.pipelines.prompts import model_prompt_set
from cmr_clip.precision import (apply_precision, native_bf16, native_int8, onednn_linear_pays, resolve_precision,
                                 use_onednn_linear)

PRECISIONS = {"float32": ("float32", None), "bfloat16": ("bfloat16", None), "int8": ("float32", "int8"),
              "bfloat16+int8": ("bfloat16", "int8")}
GEMM_SHAPE = (256, 768, 3072)  # a ViT-B MLP product for 256 tokens
VITB = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=16,
            image_size=112, num_frames=16)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained CMR-CLIP directory (required with --size trained)")
    parser.add_argument("--data-dir", help="its prepared corpus (default: MODEL/corpus)")
    parser.add_argument("--size", choices=("trained", "vitb"), default="trained",
                        help="trained: the model given; vitb: a random ViT-B/16 tower at 16 x 112 x 112")
    parser.add_argument("--batch", type=int, default=8, help="studies per timed batch (default: 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per precision (default: 5)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--compile", action="store_true",
                        help="also run every precision with its video tower compiled (torch.compile)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.size == "trained" and not args.model:
        parser.error("--model is required unless --size vitb")
    return args


def variants(model, names: list[str], compile: bool = False) -> dict[str, torch.nn.Module]:
    """name -> a copy of `model` in that precision (float32 first: the reference, with its Linear layers through
    oneDNN where that pays, as the package runs it; then, on such a CPU, "float32-mkl", torch's own float32);
    with `compile`, each precision again as "<name> compiled"."""
    out = {}
    names = ["float32", *[n for n in names if n != "float32"]]
    for name in names:
        dtype, quantize = PRECISIONS[name]
        out[name] = apply_precision(copy.deepcopy(model), resolve_precision(dtype, quantize))
        if name == "float32" and onednn_linear_pays()[0]:
            out["float32-mkl"] = copy.deepcopy(out[name])
            use_onednn_linear(out["float32-mkl"], False)
    for name in names if compile else ():
        dtype, quantize = PRECISIONS[name]
        compiled = resolve_precision(dtype, quantize, compile=True)
        out[f"{name} compiled"] = apply_precision(copy.deepcopy(model), compiled)
    return out


def median_times(models: dict[str, torch.nn.Module], pixels: torch.Tensor, repeats: int,
                 first_calls: dict[str, float] | None = None) -> dict[str, float]:
    """name -> median seconds of `encode_videos` over `pixels`, the models alternating within each repeat;
    `first_calls` receives each model's untimed first call (a compiled model compiles in it)."""
    for name, model in models.items():
        start = time.perf_counter()
        encode_videos(model, pixels)  # untimed: first-call allocations and kernel selection (and compilation)
        if first_calls is not None:
            first_calls[name] = time.perf_counter() - start
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            encode_videos(model, pixels)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def product_ratios(shape=GEMM_SHAPE, repeats: int = 3) -> dict[str, float]:
    """How much faster than float32 one matrix product of `shape` (m, k, n) is in bfloat16 and in int8 through
    `torch._int_mm` (what torchao's int8 layers call), medians of `repeats` alternating runs: what this CPU's
    kernels give before any model overhead."""
    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(k, n)
    products = {"float32": (torch.mm, a, b), "bfloat16": (torch.mm, a.bfloat16(), b.bfloat16()),
                "int8": (torch._int_mm, a.clamp(-1, 1).mul(127).to(torch.int8), b.clamp(-1, 1).mul(127).to(torch.int8))}
    times = {name: [] for name in products}
    for _ in range(repeats):
        for name, (product, x, y) in products.items():
            start = time.perf_counter()
            product(x, y)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {name: medians["float32"] / medians[name] for name in ("bfloat16", "int8")}


def cosines(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    values = torch.nn.functional.cosine_similarity(reference, other, dim=-1)
    return {"mean": float(values.mean()), "min": float(values.min())}


def trained_inputs(args):
    """(the trained float32 model, its processor, the test split, one batch of its pixel values)."""
    model = CMRCLIPModel.from_pretrained(args.model).eval()
    processor = CMRCLIPProcessor.from_pretrained(args.model)
    test = load_corpus(args.data_dir or str(Path(args.model) / "corpus"))["test"]
    collate = StudyCollator(processor.feature_extractor)
    pixels = collate([StudyTextDataset(test)[i] for i in range(min(args.batch, len(test)))])["pixel_values_videos"]
    return model, processor, test, pixels


def zero_shot_figures(models, processor, test, model_dir: str) -> dict[str, dict]:
    """name -> test-split embeddings' cosine to float32, changed yes/no decisions and AUC per finding."""
    prompts = model_prompt_set(model_dir)
    figures, labels, reference, decided = {}, None, None, None
    for name, model in models.items():
        videos = embed_split(model, processor, test)["video"]
        scores = finding_scores(model, processor.tokenizer, videos, prompts)
        labels = labels or split_labels(test, list(scores))
        columns = [scores[f] >= t for f, t in prompts.thresholds.items() if f in scores]
        decisions = np.stack(columns, axis=1) if columns else np.zeros((len(test), 0), bool)
        if reference is None:
            reference, decided = videos, decisions
        figures[name] = {"cosine": cosines(reference, videos),
                         "changed_decisions": int((decisions != decided).sum()), "decisions": int(decisions.size),
                         "auc": finding_aucs(scores, labels)}
    return figures


def vitb_inputs(args):
    config = CMRCLIPConfig(vision_config=VITB)
    torch.manual_seed(0)
    model = CMRCLIPModel(config).eval()
    pixels = torch.randn(args.batch, VITB["num_frames"], 3, VITB["image_size"], VITB["image_size"])
    return model, pixels


def main(argv=None) -> dict:
    args = parse_args(argv)
    _, allocator = keep_freed_memory()  # as the `cmr-clip` command runs; before any timed allocation
    bf16, bf16_why = native_bf16("cpu")
    print(f"threads {torch.get_num_threads()}; {bf16_why}; int8 fast path (AVX512-VNNI): "
          f"{'yes' if native_int8('cpu') else 'no'}; {allocator}")
    products = product_ratios()
    print(f"one {' x '.join(map(str, GEMM_SHAPE))} matrix product against float32: bfloat16 {products['bfloat16']:.2f}x, "
          f"int8 (torch._int_mm) {products['int8']:.2f}x")
    if args.size == "trained":
        model, processor, test, pixels = trained_inputs(args)
    else:
        model, pixels = vitb_inputs(args)
    models = variants(model, args.precisions, args.compile)
    first_calls = {}
    times = median_times(models, pixels, args.repeats, first_calls)
    if args.size == "trained":
        figures = zero_shot_figures(models, processor, test, args.model)
    else:
        reference = encode_videos(models["float32"], pixels)
        figures = {name: {"cosine": cosines(reference, encode_videos(m, pixels))} for name, m in models.items()}
    result = {"size": args.size, "batch": tuple(pixels.shape), "native_bf16": bf16, "native_int8": native_int8("cpu"),
              "matrix_product_speedup": products,
              "precisions": {name: {"median_s": times[name], "speedup": times["float32"] / times[name],
                                    "first_call_s": first_calls[name], **figures[name]}
                             for name in models}}
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def print_table(result: dict) -> None:
    print(f"video tower, batch {list(result['batch'])}, against float32 in the same run:")
    print("| precision | median s | speed vs fp32 | first call s | cosine mean | cosine min | changed yes/no decisions |")
    print("| --------- | -------- | ------------- | ------------ | ----------- | ---------- | ------------------------ |")
    for name, row in result["precisions"].items():
        changed = f"{row['changed_decisions']} of {row['decisions']}" if "decisions" in row else "n/a"
        print(f"| {name} | {row['median_s']:.3f} | {row['speedup']:.2f}x | {row['first_call_s']:.1f} | "
              f"{row['cosine']['mean']:.5f} | {row['cosine']['min']:.5f} | {changed} |")
    rows = {name: row["auc"] for name, row in result["precisions"].items() if "auc" in row}
    if rows:
        findings = list(next(iter(rows.values())))
        print("\nzero-shot AUC per finding on the test split:")
        print("| finding | " + " | ".join(rows) + " |")
        print("| ------- | " + " | ".join("-" * len(n) for n in rows) + " |")
        for finding in findings:
            cells = [f"{rows[n][finding]:.3f}" if rows[n][finding] is not None else "n/a" for n in rows]
            print(f"| {finding} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
