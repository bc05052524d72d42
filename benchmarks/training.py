"""Training throughput and peak memory of CMR-CLIP: a full step (forward of both towers, the contrastive
loss, backward, AdamW) on random studies and token ids.

Compared in the same run, each configuration in a fresh process of its own (so that none reuses memory
another freed), and printed as ratios against the first one, the baseline:
  - on the CPU: float32 without and with gradient checkpointing, bf16 autocast (what `mixed_precision="bf16"`
    runs; fast only where the CPU has AVX512-BF16 or AMX), and float32 with the Linear layers through oneDNN
    (what `onednn_linear=True` runs where it pays), at the demo's model size by default or at ViT-B width
    (`--size vitb-2`);
  - on a GPU (`--device cuda --size full`): the release's size (ViT-B/16 over 64 frames of 224 px,
    BERT-base, batch 16) in fp32 with eager attention against bf16 autocast with sdpa.

    python benchmarks/training.py                       # CPU, demo size
    python benchmarks/training.py --size vitb-2 --batch 2  # CPU, ViT-B/BERT-base width, 2 layers each
    python benchmarks/training.py --size full --device cuda --batch 16
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from transformers import BertConfig

from cmr_clip import CMRCLIPConfig, CMRCLIPModel
from cmr_clip.demo import DEMO_TEXT, DEMO_VISION
from cmr_clip.precision import native_bf16, use_onednn_linear
from video_encoder import MIB, PeakMemory  # same folder: the benchmarks share one memory probe

SIZES = {
    "tiny": dict(vision=dict(image_size=32, patch_size=16, num_frames=2, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64),
                 text=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
                 projection_dim=16, text_length=16),
    "demo": dict(vision=dict(image_size=64, num_frames=16, **DEMO_VISION), text=dict(DEMO_TEXT, vocab_size=1000),
                 projection_dim=64, text_length=128),
    "full": dict(vision=dict(), text=dict(vocab_size=28996), projection_dim=512, text_length=128),
    # ViT-B/16 and BERT-base width at 2 layers each, 16 frames of 112 px: the width where bf16 pays, at a depth
    # two CPU cores step through in seconds (a layer costs the same at every depth).
    "vitb-2": dict(vision=dict(image_size=112, num_frames=16, num_hidden_layers=2),
                   text=dict(vocab_size=28996, num_hidden_layers=2), projection_dim=512, text_length=128),
}
CONFIGURATIONS = {
    "cpu": [
        {"name": "no checkpointing", "checkpointing": False, "attn": "sdpa", "bf16": False},
        {"name": "checkpointing", "checkpointing": True, "attn": "sdpa", "bf16": False},
        {"name": "bf16 autocast", "checkpointing": False, "attn": "sdpa", "bf16": True},
        {"name": "fp32 oneDNN linear", "checkpointing": False, "attn": "sdpa", "bf16": False, "onednn": True},
    ],
    "cuda": [
        {"name": "fp32 eager", "checkpointing": False, "attn": "eager", "bf16": False},
        {"name": "bf16 sdpa", "checkpointing": False, "attn": "sdpa", "bf16": True},
        {"name": "bf16 sdpa + checkpointing", "checkpointing": True, "attn": "sdpa", "bf16": True},
    ],
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    parser.add_argument("--only", type=int, help=argparse.SUPPRESS)  # index of the configuration, in a worker
    return parser.parse_args(argv)


def build(size: str, configuration: dict, device: torch.device) -> tuple[CMRCLIPModel, dict]:
    spec = SIZES[size]
    torch.manual_seed(0)
    config = CMRCLIPConfig(vision_config=spec["vision"], text_config=BertConfig(**spec["text"]),
                           projection_dim=spec["projection_dim"])
    model = CMRCLIPModel._from_config(config, attn_implementation=configuration["attn"]).to(device).train()
    if configuration["checkpointing"]:
        model.activation_checkpointing_enable()
    if configuration.get("onednn"):
        use_onednn_linear(model, True)
    return model, spec


def run_configuration(args: argparse.Namespace, index: int) -> dict:
    device = torch.device(args.device)
    configuration = CONFIGURATIONS[device.type][index]
    model, spec = build(args.size, configuration, device)
    vision = model.config.vision_config
    videos = torch.randn(args.batch, vision.num_frames, 3, vision.image_size, vision.image_size, device=device)
    ids = torch.randint(1, model.config.text_config.vocab_size, (args.batch, spec["text_length"]), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=configuration["bf16"]):
            loss = model(pixel_values_videos=videos, input_ids=ids, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocates gradients and optimizer state
    memory = PeakMemory(device)
    memory.start()
    step()
    peak = memory.stop()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - begin)
    return {"name": configuration["name"], "samples/s": args.batch / statistics.median(times),
            "peak MiB": None if peak is None else peak / MIB}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.only is not None:
        print(json.dumps(run_configuration(args, args.only)))
        return 0
    results = []
    for index in range(len(CONFIGURATIONS[torch.device(args.device).type])):
        worker = subprocess.run(
            [sys.executable, __file__, "--only", str(index), "--size", args.size, "--device", args.device,
             "--batch", str(args.batch), "--steps", str(args.steps)],
            capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)},
        )
        if worker.returncode != 0:
            raise RuntimeError(f"configuration {index} failed:\n{worker.stderr[-3000:]}")
        results.append(json.loads(worker.stdout.strip().splitlines()[-1]))
    print(format_report(results, args))
    return 0


def format_report(results: list[dict], args: argparse.Namespace) -> str:
    base = results[0]
    lines = [f"CMR-CLIP training step, size {args.size}, batch {args.batch}, {args.device}, median of {args.steps}; "
             f"native bf16: {'yes' if native_bf16(args.device)[0] else 'no'}",
             f"{'configuration':<28}{'samples/s':>12}{'peak MiB':>12}{'speed vs base':>16}{'memory vs base':>16}"]
    for r in results:
        memory = f"{r['peak MiB']:>12.1f}" if r["peak MiB"] is not None else f"{'n/a':>12}"
        memory_ratio = (f"{r['peak MiB'] / base['peak MiB']:>15.2f}x" if r["peak MiB"] and base["peak MiB"]
                        else f"{'n/a':>16}")
        lines.append(f"{r['name']:<28}{r['samples/s']:>12.2f}{memory}{r['samples/s'] / base['samples/s']:>15.2f}x{memory_ratio}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
