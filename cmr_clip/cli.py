"""The `cmr-clip` command line.

Each subcommand lives in the module that implements it; this file only routes. A subcommand module
exposes `add_arguments(parser)` and `run(args) -> int`, and is imported only when its command runs,
so `cmr-clip --help` stays fast and a missing optional dependency breaks only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cmr_clip.demo", "synthetic cohort -> corpus -> train a small CMR-CLIP on the CPU -> evaluate (start here)"),
    "convert-original": (
        "cmr_clip.convert_cli",
        "the authors' released CMR-CLIP (Hub repo or folder) as a complete, checked model folder",
    ),
    "prepare": ("cmr_clip.data.cli", "pair DICOM studies with report impressions into a training corpus"),
    "prepare-merge": ("cmr_clip.data.merge_cli", "join the shards of `prepare --num-shards N --shard-index I` into one corpus"),
    "train": ("cmr_clip.training.cli", "train CMR-CLIP (or, with --task report, CMR-TARGET) on a prepared corpus with Accelerate"),
    "finetune": ("cmr_clip.finetune.cli", "fine-tune a study classifier (findings, diagnosis, LVEF) from CMR-CLIP, whole or with LoRA"),
    "synth": ("cmr_clip.synthetic.cli", "write a synthetic cohort of cardiac MRI studies with reports"),
    "inspect": ("cmr_clip.inspect_cli", "show how a DICOM study is read and classified, and which frames the model gets"),
    "zero-shot": ("cmr_clip.pipelines.cli", "zero-shot findings, labels and estimates for studies with a CMR-CLIP model"),
    "report": ("cmr_clip.pipelines.report_cli", "draft a report impression for studies with a CMR-TARGET model (a draft to edit)"),
    "index": ("cmr_clip.index_cli", "build a searchable index of study embeddings (cmr-clip index build ...)"),
    "search": ("cmr_clip.search_cli", "search a study index by text or by study"),
    "evaluate": ("cmr_clip.evaluation.cli", "zero-shot, few-shot, retrieval and robustness metrics with plots"),
    "push": ("cmr_clip.hub_cli", "publish a model (card, remote code) or a prepared corpus to the Hub, refusing patient identifiers"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmr-clip",
        description="Cardiac MRI video-text models (CMR-CLIP, CMR-TARGET) for the Hugging Face ecosystem.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        # Arguments are added on demand (see main) so that --help on the top level imports nothing.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help or an error for unknown commands
        parser.print_help()
        return 2
    module_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"cmr-clip {argv[0]}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
