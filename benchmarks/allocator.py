"""glibc's malloc and CPU inference: the video tower with glibc's default settings against glibc keeping freed memory.

On Linux, torch's CPU tensors come from glibc's malloc. By default glibc hands large freed blocks back to the kernel
(blocks above its mmap threshold are unmapped; freed memory at the heap's top is trimmed), so the next batch's
activations of the same size fault their pages in again and the kernel zeroes them. Two of glibc's tunables keep
that memory in the process instead:

    export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824

(blocks up to 32 MiB, glibc's documented maximum, come from the heap; up to 1 GiB of freed heap stays mapped). Set
it before Python starts: glibc reads it once. This script runs `inference_precision.py`'s timing (the video tower
embedding one batch of test studies, precisions alternating within each repeat) in a fresh interpreter per
setting, `--rounds` times alternating, and prints each precision's median seconds under both settings, their ratio,
and each child's peak resident memory (what keeping freed memory costs). The ratio of bfloat16 to float32 also
depends on the setting: float32's activations are twice the size, so float32 pays more for the page faults.

    python benchmarks/allocator.py --model cmr-clip-demo --batch 63
    python benchmarks/allocator.py --size vitb --batch 2
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import inference_precision

from cmr_clip.allocator import GLIBC_TUNABLES_LINE

KEEP_FREED = GLIBC_TUNABLES_LINE  # what `keep_freed_memory` sets, for a child process to start with
SETTINGS = {"glibc default": None, "keeping freed memory": KEEP_FREED}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained CMR-CLIP directory (required with --size trained)")
    parser.add_argument("--data-dir", help="its prepared corpus (default: MODEL/corpus)")
    parser.add_argument("--size", choices=("trained", "vitb"), default="trained")
    parser.add_argument("--batch", type=int, default=63, help="studies per timed batch (default: 63)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per precision in each child (default: 7)")
    parser.add_argument("--rounds", type=int, default=2, help="children per setting, alternating (default: 2)")
    parser.add_argument("--precisions", nargs="+", choices=inference_precision.PRECISIONS,
                        default=["float32", "bfloat16"])
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: time here and write the figures to this file
    args = parser.parse_args(argv)
    if args.size == "trained" and not args.model:
        parser.error("--model is required unless --size vitb")
    return args


def time_here(args) -> dict:
    """The child's work: median seconds per precision (`inference_precision.median_times`), and what glibc was told."""
    if args.size == "trained":
        model, _, _, pixels = inference_precision.trained_inputs(args)
    else:
        model, pixels = inference_precision.vitb_inputs(args)
    models = inference_precision.variants(model, args.precisions)
    return {"median_s": inference_precision.median_times(models, pixels, args.repeats),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES")}


def run_child(argv: list[str], tunables: str | None) -> dict:
    """Run this script as a child with `GLIBC_TUNABLES` set to `tunables` (unset for None): its figures and peak
    resident memory in MiB (from the kernel's accounting of that child: `os.wait4`)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        with subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv, "--child", str(out)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as child:
            stderr = child.stderr.read()
            _, status, usage = os.wait4(child.pid, 0)  # reaped here, with its resource usage
            child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise RuntimeError(f"the timing child failed (exit {child.returncode}):\n{stderr[-3000:]}")
        figures = json.loads(out.read_text())
    figures["peak_rss_mib"] = usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
    return figures


def main(argv=None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        Path(args.child).write_text(json.dumps(time_here(args)))
        return None
    libc = platform.libc_ver()[0]
    if libc != "glibc":
        print(f"this Python does not run on glibc ({libc or 'libc unknown'}): GLIBC_TUNABLES does nothing here")
        return None
    runs = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, tunables in SETTINGS.items():
            runs[name].append(run_child(argv, tunables))
    result = {"batch": args.batch, "size": args.size, "keep_freed": KEEP_FREED, "settings": {}}
    for name, children in runs.items():
        result["settings"][name] = {
            "glibc_tunables": children[0]["glibc_tunables"],
            "median_s": {p: statistics.median(c["median_s"][p] for c in children) for p in children[0]["median_s"]},
            "runs_s": {p: [c["median_s"][p] for c in children] for p in children[0]["median_s"]},
            "peak_rss_mib": max(c["peak_rss_mib"] for c in children),
        }
    print_table(result)
    return result


def print_table(result: dict) -> None:
    default, kept = (result["settings"][name] for name in SETTINGS)
    print(f"video tower, batch {result['batch']} ({result['size']}); keeping freed memory: "
          f"GLIBC_TUNABLES={result['keep_freed']}")
    print("| precision | glibc default: median s (each child) | keeping freed memory: median s (each child) "
          "| speed-up |")
    print("| --------- | ------------------------------------ | ------------------------------------------- "
          "| -------- |")
    for precision, seconds in default["median_s"].items():
        runs = [", ".join(f"{s:.3f}" for s in setting["runs_s"][precision]) for setting in (default, kept)]
        print(f"| {precision} | {seconds:.3f} ({runs[0]}) | {kept['median_s'][precision]:.3f} ({runs[1]}) | "
              f"{seconds / kept['median_s'][precision]:.2f}x |")
    if "float32" in default["median_s"] and "bfloat16" in default["median_s"]:
        ratios = [s["median_s"]["float32"] / s["median_s"]["bfloat16"] for s in (default, kept)]
        print(f"bfloat16 against float32: {ratios[0]:.2f}x with glibc's defaults, "
              f"{ratios[1]:.2f}x keeping freed memory")
    print(f"peak resident memory of a child: {default['peak_rss_mib']:.0f} MiB with glibc's defaults, "
          f"{kept['peak_rss_mib']:.0f} MiB keeping freed memory")


if __name__ == "__main__":
    main()
