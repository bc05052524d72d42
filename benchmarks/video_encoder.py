"""Speed and peak memory of the CMR-CLIP video tower, sdpa against eager attention.

The tower is built once per attention implementation with the same random weights, and two steps are
measured after `--warmup` untimed runs:
  - fwd: inference (`eval()`, `torch.no_grad()`);
  - fwd+bwd: a training step's forward and `backward()` of the pooled output (no optimiser).
Times are medians of `--repeats` runs in one process, the implementations alternating within every
repeat so that a change in background load hits both alike. Peak memory is measured for each
implementation in a fresh process of its own (so that neither reuses memory the other freed; the two
run side by side) as the most memory in use during one run of a step beyond what was in use before it
(the model, its input and its gradients): on CUDA from `torch.cuda.max_memory_allocated`; on CPU from
the kernel's peak resident set (`VmHWM`, reset through `/proc/self/clear_refs`; "n/a" where that is
missing), with glibc told to unmap every freed block of 64 KiB or more at once, so that the resident
set follows the live tensors.

Sizes: `full` is the released model's input, 64 frames of 224 x 224 through ViT-B/16 (12 layers);
`cpu` keeps those frame and block shapes but has 8 frames and 2 layers, so it finishes in one to two
minutes on two cores; `tiny` only checks that the script works (tests/test_benchmarks.py).

    python benchmarks/video_encoder.py                                    # --size cpu on the CPU
    python benchmarks/video_encoder.py --size full --device cuda --dtype bfloat16
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from cmr_clip import CMRCLIPVisionConfig, CMRCLIPVisionModel

SIZES = {
    "tiny": dict(num_frames=2, image_size=32, patch_size=16, hidden_size=64, num_hidden_layers=1,
                 num_attention_heads=2, intermediate_size=128),
    "cpu": dict(num_frames=8, num_hidden_layers=2),
    "full": dict(),
}
IMPLEMENTATIONS = ("eager", "sdpa")
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="cpu", help="model and input size (default: cpu)")
    parser.add_argument("--batch", type=int, default=1, help="studies per batch (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default: 1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--peaks-of", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)  # the memory subprocess
    return parser.parse_args(argv)


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


def build_models(args: argparse.Namespace, impls: tuple[str, ...] = IMPLEMENTATIONS) -> tuple[dict, torch.Tensor]:
    """The tower once per attention implementation, all with the same random weights, and a batch."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = CMRCLIPVisionConfig(**SIZES[args.size], time_init="normal")
    torch.manual_seed(0)
    reference = CMRCLIPVisionModel(config).state_dict()
    models = {}
    for impl in impls:
        models[impl] = CMRCLIPVisionModel._from_config(config, attn_implementation=impl)
        models[impl].load_state_dict(reference)
        models[impl].to(device, dtype)
    videos = torch.randn(
        args.batch, config.num_frames, config.num_channels, config.image_size, config.image_size,
        device=device, dtype=dtype,
    )
    return models, videos


def steps(model: CMRCLIPVisionModel, videos: torch.Tensor) -> dict:
    """The two measured steps: inference forward, and a training forward with backward."""
    def forward():
        model.eval()
        with torch.no_grad():
            model(pixel_values_videos=videos)

    def forward_backward():
        model.train()
        model(pixel_values_videos=videos).pooler_output.float().sum().backward()

    return {"fwd": forward, "fwd+bwd": forward_backward}


def measure_times(models: dict, videos: torch.Tensor, args: argparse.Namespace) -> dict[str, dict]:
    """Median milliseconds per step and implementation, after warm-up. The implementations alternate
    within every repeat (each first in turn), so a change in background load affects both alike."""
    device = torch.device(args.device)
    times = {impl: {} for impl in IMPLEMENTATIONS}
    for name in ("fwd", "fwd+bwd"):
        runs = {impl: steps(models[impl], videos)[name] for impl in IMPLEMENTATIONS}
        for impl in IMPLEMENTATIONS:
            for _ in range(args.warmup):
                runs[impl]()
        samples = {impl: [] for impl in IMPLEMENTATIONS}
        for repeat in range(args.repeats):
            order = IMPLEMENTATIONS if repeat % 2 == 0 else IMPLEMENTATIONS[::-1]
            for impl in order:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                begin = time.perf_counter()
                runs[impl]()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                samples[impl].append(time.perf_counter() - begin)
        for impl in IMPLEMENTATIONS:
            times[impl][f"{name} ms"] = 1000 * statistics.median(samples[impl])
    return times


def measure_peaks(impl: str, args: argparse.Namespace) -> dict:
    """Peak MiB of one run of each step for one implementation, after a warm-up that also allocates the
    gradients. Meant for a fresh process: see `peaks_in_fresh_processes`."""
    models, videos = build_models(args, impls=(impl,))
    memory = PeakMemory(torch.device(args.device))
    run = steps(models[impl], videos)
    for _ in range(args.warmup):
        run["fwd+bwd"]()
    peaks = {}
    for name, step in run.items():
        memory.start()
        step()
        peak = memory.stop()
        peaks[f"{name} peak MiB"] = None if peak is None else peak / MIB
    return peaks


def peaks_in_fresh_processes(args: argparse.Namespace) -> dict[str, dict]:
    """`measure_peaks` of every implementation, each in a new Python process (run side by side) whose
    glibc unmaps freed blocks of 64 KiB or more at once."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    workers = {
        impl: subprocess.Popen(
            [sys.executable, __file__, "--peaks-of", impl, "--size", args.size, "--batch", str(args.batch),
             "--warmup", str(args.warmup), "--device", args.device, "--dtype", args.dtype],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for impl in IMPLEMENTATIONS
    }
    peaks = {}
    for impl, worker in workers.items():
        stdout, stderr = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"measuring the peak memory of {impl} failed:\n{stderr}")
        peaks[impl] = json.loads(stdout.strip().splitlines()[-1])
    return peaks


def format_report(results: dict[str, dict], args: argparse.Namespace) -> str:
    """The table of both implementations and the line of sdpa/eager ratios."""
    config = CMRCLIPVisionConfig(**SIZES[args.size])
    tokens = 1 + config.num_frames * config.num_patches
    columns = ("fwd ms", "fwd+bwd ms", "fwd peak MiB", "fwd+bwd peak MiB")

    def cell(value):
        return f"{value:>18.1f}" if value is not None else f"{'n/a':>18}"

    lines = [
        f"CMR-CLIP video tower, size {args.size}: batch {args.batch} x {config.num_frames} frames x "
        f"{config.image_size}px, width {config.hidden_size}, {config.num_hidden_layers} layers, {tokens} tokens; "
        f"{args.device} {args.dtype}, median of {args.repeats}",
        f"{'impl':<8}" + "".join(f"{c:>18}" for c in columns),
    ]
    lines += [f"{impl:<8}" + "".join(cell(results[impl][c]) for c in columns) for impl in IMPLEMENTATIONS]

    def ratio(column):
        sdpa, eager = results["sdpa"][column], results["eager"][column]
        return f"{sdpa / eager:.2f}x" if sdpa is not None and eager else "n/a"

    lines.append("sdpa/eager: " + ", ".join(f"{c} {ratio(c)}" for c in columns))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peaks_of:
        print(json.dumps(measure_peaks(args.peaks_of, args)))
        return 0
    models, videos = build_models(args)
    results = measure_times(models, videos, args)
    for impl, peaks in peaks_in_fresh_processes(args).items():
        results[impl].update(peaks)
    print(format_report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
