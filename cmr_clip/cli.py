"""The `cmr-clip` command line: routes `cmr-clip COMMAND ...` to its module in `cmr_clip.commands`.

Each command module is imported only when its command runs (`cmr-clip --help` imports none of them, and a
missing optional dependency breaks only its own command); `commands.base.execute` parses, runs and maps
errors to the exit codes 0 done, 1 some inputs failed, 2 usage error or nothing done. Run as the process's
command (`main()` reading `sys.argv`: the `cmr-clip` script, `python -m cmr_clip`), it first has glibc's malloc keep
freed memory for the batches to come (`cmr_clip.allocator`; `CMR_CLIP_KEEP_FREED_MEMORY=0` leaves glibc's defaults).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .allocator import keep_freed_memory
from .commands.base import NOTHING_DONE, execute

# name -> (module in cmr_clip.commands, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "synthetic cohort -> corpus -> train a small CMR-CLIP on the CPU -> evaluate (start here)"),
    "synth": ("synth", "write a synthetic cohort of cardiac MRI studies with reports"),
    "inspect": ("inspect", "show how a DICOM study is read and classified, and which frames the model gets"),
    "prepare": ("prepare", "pair DICOM studies with report impressions into a training corpus"),
    "prepare-merge": ("prepare_merge", "join the shards of `prepare --num-shards N --shard-index I` into one corpus"),
    "train": ("train", "train CMR-CLIP (or, with --task report, CMR-TARGET) on a prepared corpus with Accelerate"),
    "finetune": ("finetune", "fine-tune a study classifier (findings, diagnosis, LVEF) from CMR-CLIP, whole or with LoRA"),
    "evaluate": ("evaluate", "zero-shot, few-shot, retrieval and robustness metrics with plots"),
    "zero-shot": ("zero_shot", "zero-shot findings, labels and estimates for studies with a CMR-CLIP model"),
    "predict": ("predict", "zero-shot answers for a whole archive of studies as one table (resumable, batched)"),
    "report": ("report", "draft a report impression for studies with a CMR-TARGET model (a draft to edit)"),
    "index": ("index", "build a searchable index of study embeddings (cmr-clip index build ...)"),
    "search": ("search", "search a study index by text or by study"),
    "convert-original": ("convert_original",
                         "the authors' released CMR-CLIP (Hub repo or folder) as a complete, checked model folder"),
    "app": ("app", "a web page (Gradio) for one study: series, frames used, findings, nearest cases, draft"),
    "push": ("push", "publish a model (card, remote code) or a prepared corpus to the Hub, refusing patient identifiers"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmr-clip",
        description="Cardiac MRI video-text models (CMR-CLIP, CMR-TARGET) for the Hugging Face ecosystem.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's own command line: this process is ours to tune
        logging.getLogger(__name__).debug(keep_freed_memory()[1])
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        try:
            parser.parse_args(argv)  # prints help (exit 0) or an error naming the unknown command (exit 2)
        except SystemExit as exit_:
            return int(exit_.code or 0)
        parser.print_help()
        return NOTHING_DONE
    module = importlib.import_module(f"cmr_clip.commands.{COMMANDS[argv[0]][0]}")
    return execute(argv[0], module, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
