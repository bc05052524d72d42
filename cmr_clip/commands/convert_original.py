"""`cmr-clip convert-original [SOURCE] --output-dir DIR`: the authors' released CMR-CLIP as a complete, checked
model folder.

    cmr-clip convert-original makiyeah/CMRCLIP --output-dir cmr-clip-release      # Hub repo id (cache, --revision, --token)
    cmr-clip convert-original ./CMRCLIP-copy --output-dir cmr-clip-release --tokenizer ./Bio_ClinicalBERT   # offline
    cmr-clip convert-original --checkpoint pytorch_model.bin --config config.json --output-dir cmr-clip-release

SOURCE is a Hub repo id or a local folder laid out like the Hub repository (default: the release,
makiyeah/CMRCLIP); `--checkpoint`/`--config` give the two files directly. See `cmr_clip.release` for what the
folder holds. Exit codes: 0 written, 2 nothing written (the reason is printed: a key of the checkpoint that does
not fit, a failed conversion check, a source that cannot be fetched).
"""

from __future__ import annotations

import argparse

from ..modeling.convert_original_checkpoint import CONVERSION_CHECK_FILE, CheckpointMismatchError, ConversionCheckError
from ..release import RELEASE_REPO, ReleaseError, check_output_folder, fetch_release, local_release, write_release
from .base import DONE, UsageError, add_flag, log_to_console

ERRORS = (CheckpointMismatchError, ConversionCheckError, ReleaseError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", default=None,
                        help=f"Hub repo id or a local folder laid out like it (default: {RELEASE_REPO})")
    add_flag(parser, "--output-dir", required=True, help="the folder to write (must not exist or be empty)")
    parser.add_argument("--revision", help="branch, tag or commit of the Hub repository")
    parser.add_argument("--token", help="Hub token (default: the one huggingface_hub finds)")
    parser.add_argument("--cache-dir", help="Hub cache folder (default: huggingface_hub's)")
    parser.add_argument("--tokenizer", help="the text tower's tokenizer and config: a local folder or a Hub name "
                        "(default: the text model the release names, emilyalsentzer/Bio_ClinicalBERT)")
    parser.add_argument("--checkpoint", help="pytorch_model.bin or .safetensors of the release, instead of SOURCE")
    parser.add_argument("--config", help="the release's config.json, with --checkpoint")
    parser.add_argument("--text-config", help="config.json of the text encoder, when neither the release's config "
                        "nor --tokenizer provides it")
    parser.add_argument("--num-heads", type=int, help="attention heads of the video tower, if the config does not say")


def run(args: argparse.Namespace) -> int:
    log_to_console()
    if bool(args.checkpoint) != bool(args.config) or (args.checkpoint and args.source):
        raise UsageError("give SOURCE, or --checkpoint with --config, not both; nothing written.")
    check_output_folder(args.output_dir)  # before a download, not after
    if args.checkpoint:
        source = local_release(args.checkpoint, args.config)
    else:
        source = fetch_release(args.source or RELEASE_REPO, revision=args.revision, token=args.token,
                               cache_dir=args.cache_dir)
    record = write_release(source, args.output_dir, tokenizer=args.tokenizer, text_config=args.text_config,
                           num_heads=args.num_heads)
    print(f"conversion check: max |difference| {record['max_abs_difference']:.2e} against the release's forward "
          f"recomputed from the source weights (tolerance {record['tolerance']:g}; {CONVERSION_CHECK_FILE})")
    print("written: the --output-dir folder loads with AutoModel, AutoProcessor and pipeline(\"zero-shot-cmr\", model=...)")
    return DONE
