"""Speed and peak memory of the CMR-CLIP video tower against two baselines, as ratios to the release.

Five implementations of a divided space-time video transformer at the same width, depth, heads, patch size,
frame count and image size:
  - release: the release's tower as it computes it, in float32 (`release_video_tower.py`: an explicit q.k
    softmax per group after einops-style rearranges), holding the SAME weights as ours;
  - timesformer: transformers' `TimesformerModel`, "divided_space_time" attention, float32, random weights;
  - sdpa, eager: our `CMRCLIPVisionModel` in float32 with each attention implementation (same weights);
  - sdpa-onednn: ours in float32 with its Linear layers through oneDNN's kernel (`cmr_clip.precision.
    use_onednn_linear`; torch's CPU build computes float32 products with MKL, which takes its AVX2 path on AMD);
  - sdpa-bf16: ours with bfloat16 weights and input (`from_pretrained(..., dtype=torch.bfloat16)`'s path).
Each step is measured after `--warmup` untimed runs:
  - fwd: inference (`eval()`, `torch.no_grad()`);
  - fwd+bwd: a training step's forward and `backward()` of the CLS output (no optimiser).
Times are medians of `--repeats` runs in one process, the implementations alternating within every repeat
(the order reversed every other repeat) so that a change in background load hits all alike. Peak memory is
measured for each implementation in a fresh process of its own (so that none reuses memory another freed;
they run side by side) as the most memory in use during one run of a step beyond what was in use before it
(the model, its input and its gradients): on CUDA from `torch.cuda.max_memory_allocated`; on CPU from the
kernel's peak resident set (`VmHWM`, reset through `/proc/self/clear_refs`; "n/a" where that is missing),
with glibc told to unmap every freed block of 64 KiB or more at once, so that the resident set follows the
live tensors. The ratio table divides the release's time by each one's (above 1: faster than the release)
and each one's peak memory by the release's (below 1: less memory).

Sizes (ViT-B/16 width: 768, 12 heads, MLP 3072):
  - `cpu` (default): 16 frames of 112 x 112, 785 tokens, fwd and fwd+bwd. Depth 2 by default, the same for
    every model, because two CPU cores without native bf16 take minutes per bf16 step at depth 12 (a
    block costs the same at every depth, so the ratios hold); `--layers 12` gives the full depth.
  - `full`: the release's input, 64 frames of 224 x 224 (12545 tokens), 12 layers, forward only.
  - `tiny`: only checks that the script works (tests/test_benchmarks.py).
The header says whether the device computes bf16 natively: a CPU without it (no AVX512-BF16/AMX) emulates
bf16 matrix products, and the bf16 row is then far slower than float32.

    python benchmarks/video_encoder.py                                   # 16 x 112 x 112, 2 layers, CPU
    python benchmarks/video_encoder.py --size full --repeats 1 --warmup 0 # 64 x 224 x 224, forward only
    python benchmarks/video_encoder.py --size full --device cuda --steps fwd fwd+bwd
"""

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TimesformerConfig, TimesformerModel

from cmr_clip import CMRCLIPVisionConfig, CMRCLIPVisionModel
from cmr_clip.precision import native_bf16, onednn_linear_pays, use_onednn_linear
from release_video_tower import ReleaseVideoTower  # same folder

SIZES = {
    "tiny": dict(num_frames=2, image_size=32, patch_size=16, hidden_size=64, num_hidden_layers=1,
                 num_attention_heads=2, intermediate_size=128),
    "cpu": dict(num_frames=16, image_size=112, num_hidden_layers=2),
    "full": dict(num_frames=64, image_size=224),
}
DEFAULT_STEPS = {"tiny": ("fwd", "fwd+bwd"), "cpu": ("fwd", "fwd+bwd"), "full": ("fwd",)}
IMPLEMENTATIONS = ("release", "timesformer", "sdpa", "eager", "sdpa-onednn", "sdpa-bf16")
BASELINE = "release"
STEPS = ("fwd", "fwd+bwd")
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="cpu", help="model and input size (default: cpu)")
    parser.add_argument("--layers", type=int, help="depth of every model (default: the size's)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, help="steps to measure (default: the size's)")
    parser.add_argument("--impls", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS),
                        help="implementations to measure (default: all; ratios need release)")
    parser.add_argument("--batch", type=int, default=1, help="studies per batch (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default: 1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--peaks-of", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)  # the memory subprocess
    args = parser.parse_args(argv)
    args.steps = tuple(args.steps or DEFAULT_STEPS[args.size])
    return args


def tower_config(args: argparse.Namespace) -> CMRCLIPVisionConfig:
    layers = {} if args.layers is None else {"num_hidden_layers": args.layers}
    return CMRCLIPVisionConfig(**{**SIZES[args.size], **layers}, time_init="normal")


def timesformer_config(config: CMRCLIPVisionConfig) -> TimesformerConfig:
    """transformers' TimeSformer at the dimensions of our tower."""
    return TimesformerConfig(
        image_size=config.image_size, patch_size=config.patch_size, num_channels=config.num_channels,
        num_frames=config.num_frames, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        layer_norm_eps=config.layer_norm_eps, qkv_bias=config.qkv_bias, attention_type="divided_space_time",
    )


class PeakMemory:
    """Peak memory of one step beyond the memory in use when it started, in bytes (None if unknown)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu_peak_resettable = (
            device.type == "cpu" and os.access("/proc/self/clear_refs", os.W_OK)
        )

    @staticmethod
    def _proc_status_kib(field: str) -> int:
        return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        elif self.cpu_peak_resettable:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
            self.baseline = self._proc_status_kib("VmRSS") * 1024

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.baseline
        if self.cpu_peak_resettable:
            return self._proc_status_kib("VmHWM") * 1024 - self.baseline
        return None


def build_models(args: argparse.Namespace, impls) -> tuple[dict[str, Callable], dict]:
    """For each implementation, its model and a function of the videos giving the CLS output (B, D); ours and
    the release's hold the same random weights. Also the videos, per implementation's dtype."""
    device = torch.device(args.device)
    config = tower_config(args)
    torch.manual_seed(0)
    weights = CMRCLIPVisionModel(config).state_dict()
    videos = torch.randn(args.batch, config.num_frames, config.num_channels, config.image_size, config.image_size,
                         device=device)
    models, forwards = {}, {}
    for impl in impls:
        if impl == "release":
            models[impl] = ReleaseVideoTower.from_config(config)
            models[impl].load_tower_weights(weights)
            forwards[impl] = models[impl]
        elif impl == "timesformer":
            models[impl] = TimesformerModel(timesformer_config(config))
            forwards[impl] = lambda x, model=models[impl]: model(pixel_values=x).last_hidden_state[:, 0]
        else:
            # A copy of the config each: `_from_config` sets the implementation on the config it is given, and
            # a model reads it from there at run time (with one shared config every row ran the last one).
            implementation = impl.split("-")[0]
            models[impl] = CMRCLIPVisionModel._from_config(copy.deepcopy(config), attn_implementation=implementation)
            models[impl].load_state_dict(weights)
            if impl.endswith("onednn"):
                use_onednn_linear(models[impl], True)
            forwards[impl] = lambda x, model=models[impl]: model(pixel_values_videos=x).pooler_output
        models[impl].to(device, torch.bfloat16 if impl.endswith("bf16") else torch.float32)
    inputs = {impl: videos.to(torch.bfloat16 if impl.endswith("bf16") else torch.float32) for impl in impls}
    return {impl: steps(models[impl], forwards[impl], inputs[impl]) for impl in impls}, config


def steps(model: torch.nn.Module, forward: Callable, videos: torch.Tensor) -> dict[str, Callable]:
    """The two measured steps: inference forward, and a training forward with backward."""
    def inference():
        model.eval()
        with torch.no_grad():
            forward(videos)

    def forward_backward():
        model.train()
        forward(videos).float().sum().backward()

    return {"fwd": inference, "fwd+bwd": forward_backward}


def measure_times(runs: dict[str, dict], args: argparse.Namespace) -> dict[str, dict]:
    """Median milliseconds per step and implementation, after warm-up. The implementations alternate within
    every repeat (the order reversed every other repeat), so a change in background load affects all alike."""
    device = torch.device(args.device)
    impls = tuple(runs)
    times = {impl: {} for impl in impls}
    for name in args.steps:
        for impl in impls:
            for _ in range(args.warmup):
                runs[impl][name]()
        samples = {impl: [] for impl in impls}
        for repeat in range(args.repeats):
            for impl in impls if repeat % 2 == 0 else impls[::-1]:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                begin = time.perf_counter()
                runs[impl][name]()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                samples[impl].append(time.perf_counter() - begin)
        for impl in impls:
            times[impl][f"{name} ms"] = 1000 * statistics.median(samples[impl])
    return times


def measure_peaks(impl: str, args: argparse.Namespace) -> dict:
    """Peak MiB of one run of each step for one implementation, after a warm-up that also allocates the
    gradients when fwd+bwd is measured. Meant for a fresh process: see `peaks_in_fresh_processes`."""
    runs, _ = build_models(args, (impl,))
    memory = PeakMemory(torch.device(args.device))
    for _ in range(args.warmup):
        runs[impl][args.steps[-1]]()
    peaks = {}
    for name in args.steps:
        memory.start()
        runs[impl][name]()
        peak = memory.stop()
        peaks[f"{name} peak MiB"] = None if peak is None else peak / MIB
    return peaks


def peaks_in_fresh_processes(args: argparse.Namespace) -> dict[str, dict]:
    """`measure_peaks` of every implementation, each in a new Python process (run side by side) whose glibc
    unmaps freed blocks of 64 KiB or more at once."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    common = ["--size", args.size, "--batch", str(args.batch), "--warmup", str(args.warmup), "--device", args.device,
              "--steps", *args.steps] + ([] if args.layers is None else ["--layers", str(args.layers)])
    workers = {
        impl: subprocess.Popen([sys.executable, __file__, "--peaks-of", impl, *common],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for impl in args.impls
    }
    peaks = {}
    for impl, worker in workers.items():
        stdout, stderr = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"measuring the peak memory of {impl} failed:\n{stderr}")
        peaks[impl] = json.loads(stdout.strip().splitlines()[-1])
    return peaks


def format_report(results: dict[str, dict], config: CMRCLIPVisionConfig, args: argparse.Namespace) -> str:
    """The table of every implementation's figures and the table of their ratios to the release."""
    tokens = 1 + config.num_frames * config.num_patches
    columns = [f"{step} ms" for step in args.steps] + [f"{step} peak MiB" for step in args.steps]
    device = torch.device(args.device)
    lines = [
        f"Video tower, size {args.size}: batch {args.batch} x {config.num_frames} frames x {config.image_size}px, "
        f"width {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
        f"patch {config.patch_size}, {tokens} tokens; {args.device}, {torch.get_num_threads()} threads, "
        f"native bf16: {'yes' if native_bf16(device)[0] else 'no'}; oneDNN float32 linear pays: "
        f"{'yes' if onednn_linear_pays()[0] else 'no'}; median of {args.repeats}",
        f"{'impl':<13}" + "".join(f"{c:>18}" for c in columns),
    ]
    lines += [f"{impl:<13}" + "".join(_cell(results[impl][c]) for c in columns) for impl in args.impls]
    if BASELINE in results:
        base = results[BASELINE]
        lines.append(f"ratios to {BASELINE} (time: {BASELINE}/impl, above 1 is faster; memory: impl/{BASELINE}, "
                     "below 1 is less)")
        lines += [f"{impl:<13}" + "".join(f"{_ratio(results[impl][c], base[c], c.endswith('ms')):>18}"
                                          for c in columns) for impl in args.impls]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{value:>18.1f}" if value is not None else f"{'n/a':>18}"


def _ratio(value: float | None, base: float | None, speed: bool) -> str:
    if value is None or base is None or (value if speed else base) <= 0:
        return "n/a"
    return f"{(base / value if speed else value / base):.2f}x"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peaks_of:
        print(json.dumps(measure_peaks(args.peaks_of, args)))
        return 0
    runs, config = build_models(args, args.impls)
    results = measure_times(runs, args)
    del runs
    for impl, peaks in peaks_in_fresh_processes(args).items():
        results[impl].update(peaks)
    print(format_report(results, config, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
