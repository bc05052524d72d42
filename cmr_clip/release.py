"""The authors' released CMR-CLIP, from its Hub repository to a complete, checked model directory.

    from cmr_clip.release import fetch_release, write_release

    source = fetch_release("makiyeah/CMRCLIP")        # Hub repo id (cache, revision, token) or a local folder
    record = write_release(source, "cmr-clip-release") # what `cmr-clip convert-original makiyeah/CMRCLIP` does

The directory written holds the converted weights (safetensors) and config, a `CMRCLIPProcessor` (the text
tower's tokenizer; the `reference` layout at the checkpoint's frame count and size with the release's pixel
statistics), the zero-shot prompt set, a model card, `provenance.json` (source repo and revision, sha256 of
the source files, the licence as the source states it, the citation) and `conversion_check.json` (the converted
model against an independent recomputation of the release's forward). Everything is written into a temporary
folder beside the output and moved into place only once the conversion and its check have passed: a failed
conversion leaves nothing behind. Nothing written carries a local path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
import transformers
from huggingface_hub import metadata_load, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoTokenizer

from .hub import CITATION, model_card
from .modeling import CMRCLIPModel
from .modeling.convert_original_checkpoint import (
    CONVERSION_CHECK_FILE,
    PROVENANCE_FILE,
    RELEASE_TEXT_MODEL,
    ConversionCheckError,
    conversion_check,
    convert_state,
    load_original_state_dict,
)
from .pipelines.prompts import PromptSet
from .processing import CMRCLIPProcessor, CMRStudyProcessor, StudyLayout
from .processing.feature_extraction_cmr_study import REFERENCE_RESIZE
from .processing.pixels import IMAGENET_MEAN, IMAGENET_STD
from .privacy import scan_folder, write_json, write_text

logger = logging.getLogger(__name__)

RELEASE_REPO = "makiyeah/CMRCLIP"
# The files of a release repository, in order of preference for the weights.
CHECKPOINT_FILES = ("pytorch_model.bin", "model.safetensors")
RELEASE_FILES = (*CHECKPOINT_FILES, "config.json", "README.md")
# The release's input size; its test-time resize (short side to 256, centre crop 256) is relative to it.
RELEASE_IMAGE_SIZE = 224


class ReleaseError(ValueError):
    """The release cannot be fetched or written as asked (missing files, an output folder in the way)."""


@dataclass
class ReleaseSource:
    """Where a release's files are on this machine and where they came from (no local path is ever recorded)."""

    checkpoint: Path
    config: Path
    card: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    kind: str = "hub"  # "hub", "local folder" or "local files"


def fetch_release(source: str = RELEASE_REPO, revision: str | None = None, token: str | bool | None = None,
                  cache_dir: str | None = None) -> ReleaseSource:
    """The checkpoint, config and model card of a release: a local folder laid out like the Hub repository, or a
    Hub repo id fetched with `huggingface_hub.snapshot_download` (its cache, `revision`, `token` and offline
    mode as usual). The revision recorded is the commit the files came from."""
    folder = Path(source)
    if folder.is_dir():
        return _source_in(folder, kind="local folder")
    try:
        snapshot = Path(snapshot_download(source, revision=revision, token=token, cache_dir=cache_dir,
                                          allow_patterns=list(RELEASE_FILES)))
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise ReleaseError(f"could not fetch {source!r}{f' at revision {revision!r}' if revision else ''} from the "
                           f"Hub ({type(error).__name__}: {error}). Check the repo id and your connection or token, "
                           "or pass a local folder holding pytorch_model.bin and config.json.") from error
    # snapshot_download returns the cache's snapshot folder, which is named after the commit.
    return _source_in(snapshot, kind="hub", repo_id=source, revision=snapshot.name)


def _source_in(folder: Path, kind: str, repo_id: str | None = None, revision: str | None = None) -> ReleaseSource:
    checkpoint = next((folder / name for name in CHECKPOINT_FILES if (folder / name).is_file()), None)
    where = repo_id or "the folder"
    if checkpoint is None or not (folder / "config.json").is_file():
        raise ReleaseError(f"{where} lacks {' or '.join(CHECKPOINT_FILES) if checkpoint is None else 'config.json'}: a "
                           "CMR-CLIP release holds pytorch_model.bin and config.json.")
    card = folder / "README.md"
    return ReleaseSource(checkpoint, folder / "config.json", card if card.is_file() else None, repo_id, revision, kind)


def local_release(checkpoint: str | Path, config: str | Path) -> ReleaseSource:
    """A release given as two local files (`--checkpoint`, `--config`)."""
    for flag, path in (("--checkpoint", checkpoint), ("--config", config)):
        if not Path(path).is_file():
            raise ReleaseError(f"the {flag} file {Path(path).name!r} does not exist.")
    return ReleaseSource(Path(checkpoint), Path(config), kind="local files")


def write_release(source: ReleaseSource, out: str | Path, tokenizer: str | None = None, text_config: str | None = None,
                  num_heads: int | None = None) -> dict:
    """Convert `source` into a complete model directory at `out` (see module doc); returns the conversion check's
    record. `tokenizer`: a local folder or Hub name of the text tower's tokenizer (default: the text model the
    release's config names, Bio_ClinicalBERT). Raises (and writes nothing) when the checkpoint does not match
    CMR-CLIP (`CheckpointMismatchError`, naming the keys) or the check fails (`ConversionCheckError`)."""
    out = check_output_folder(out)
    try:
        original_config = json.loads(source.config.read_text())
    except json.JSONDecodeError as error:
        raise ReleaseError(f"the release's config.json is not valid JSON ({error}).") from error
    original = load_original_state_dict(source.checkpoint)
    text_name = tokenizer or original_config.get("text_params", {}).get("model") or RELEASE_TEXT_MODEL
    model = convert_state(original, original_config, text_config, tokenizer, num_heads)
    processor = release_processor(model, load_tokenizer(text_name))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cmr-clip-convert-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's private mode would otherwise become the output folder's
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        PromptSet.load(None).save(staging)
        record = conversion_check(CMRCLIPModel.from_pretrained(staging), original)
        write_json(staging / CONVERSION_CHECK_FILE, record, sort_keys=True)
        if not record["passed"]:
            raise ConversionCheckError(
                f"the converted model differs from the source weights by up to {record['max_abs_difference']:.3g} "
                f"(tolerance {record['tolerance']:g}; per output: {record['per_output']}). Nothing was written; "
                "report this with the source's repo id and revision.")
        text_record = "a local folder (--tokenizer)" if Path(text_name).is_dir() else text_name
        write_json(staging / PROVENANCE_FILE, provenance(source, text_record), sort_keys=True)
        write_text(staging / "README.md", str(model_card(staging, repo_id=out.name)), "README.md (model card)")
        scan_folder(staging)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def check_output_folder(out: str | Path) -> Path:
    """`out` as a Path, if it is new or an empty folder; a conversion never mixes its files with others."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"the output folder {out.name!r} exists and is not empty; pass a new folder.")
    return out


def load_tokenizer(name_or_dir: str):
    try:
        return AutoTokenizer.from_pretrained(name_or_dir)
    except (OSError, ValueError) as error:
        raise ReleaseError(f"the text tower's tokenizer ({name_or_dir!r}) could not be loaded ({type(error).__name__}). "
                           "Offline, pass --tokenizer with a local copy of the text model's folder "
                           f"({RELEASE_TEXT_MODEL} for the release).") from error


def release_processor(model: CMRCLIPModel, tokenizer) -> CMRCLIPProcessor:
    """The processor the release's weights expect: the `reference` layout (its composition, segment sampling and
    zero frames for missing views) with the checkpoint's frame count, the release's test-time resize and crop scaled
    to the checkpoint's image size, ImageNet pixel statistics, and the tokenizer cut at the model's text length."""
    vision = model.config.vision_config
    layout = StudyLayout.reference()
    if (vision.num_frames, vision.image_size) != (layout.num_frames, RELEASE_IMAGE_SIZE):
        logger.warning("The checkpoint takes %d frames at %d px, not the release's %d at %d: the processor keeps the "
                       "reference composition at the checkpoint's size.", vision.num_frames, vision.image_size,
                       layout.num_frames, RELEASE_IMAGE_SIZE)
        layout = StudyLayout.from_dict({**layout.to_dict(), "num_frames": vision.num_frames})
    resize = round(REFERENCE_RESIZE * vision.image_size / RELEASE_IMAGE_SIZE)
    studies = CMRStudyProcessor(layout=layout, image_size=vision.image_size, resize_shortest_edge=resize,
                                crop_size=resize, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    if tokenizer.model_max_length > model.config.max_text_length:
        tokenizer.model_max_length = model.config.max_text_length
    return CMRCLIPProcessor(tokenizer=tokenizer, feature_extractor=studies)


def provenance(source: ReleaseSource, text_model: str) -> dict:
    """Where the weights came from, by repo id, commit and checksum (never a local path), with the licence as the
    source's model card states it and the paper's citation."""
    stated = (metadata_load(source.card) or {}) if source.card is not None else {}
    return {
        "source": {
            "kind": source.kind,
            "repo_id": source.repo_id,
            "revision": source.revision,
            "checkpoint_file": source.checkpoint.name if source.kind != "local files" else None,
            "checkpoint_sha256": sha256_of(source.checkpoint),
            "config_sha256": sha256_of(source.config),
        },
        "license": {
            "stated": stated.get("license"),
            "name": stated.get("license_name"),
            "link": stated.get("license_link"),
            "where": "the source's model card (README.md metadata)" if source.card is not None else None,
        },
        "text_model": text_model,
        "citation": CITATION,
        "converted_with": {"cmr_clip": version("cmr-clip"), "transformers": transformers.__version__,
                           "torch": torch.__version__, "python": platform.python_version()},
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
