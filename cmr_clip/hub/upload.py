"""Staging and upload: what `push` sends to the Hub, staged in a folder and passed by the PHI guard first.

`stage` writes what a user of the repo needs (weights, configs, processor, prompt set, the converter's records,
a generated model card and the remote code) and runs the guard over it; `push` uploads a staged folder in one
commit, so `push --dry-run` and the real push share every step. Checkpoints, corpora, cohorts and metrics.json
(its figures are in the card) stay behind. `stage_dataset` / `push_dataset` do the same for a prepared corpus.
A model's tokenizer vocabulary is checked against the identities `prepare` saw when the corpus is known
(`data_dir`, or the demo's `save_dir/corpus`).
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path

from datasets import load_from_disk
from huggingface_hub import CommitOperationAdd, HfApi

from ..modeling.convert_original_checkpoint import CONVERSION_CHECK_FILE, PROVENANCE_FILE
from ..pipelines.prompts import MODEL_PROMPTS_FILE
from ..privacy import check_dataset, load_identity_hashes, scan_folder, write_text
from .model_card import model_card
from .publication import publication
from .remote_code import export_remote_code

# What a user of the repo needs, by file name (top level of the saved directory only): weights, configs, the
# processor (tokenizer, study processor with its layout), the prompt set with its thresholds, and a converted
# release's provenance and conversion check.
PUBLISHED_FILES = (
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json", "processor_config.json",
    "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "chat_template.jinja", "adapter_config.json",
    MODEL_PROMPTS_FILE, PROVENANCE_FILE, CONVERSION_CHECK_FILE,
)


def stage(save_dir: str | Path, out_dir: str | Path, remote_code: bool = True, card=None, **card_options) -> list[str]:
    """Write into `out_dir` exactly what `push` uploads, PHI guard included; returns the file names."""
    save_dir, out_dir = Path(save_dir), Path(out_dir)
    publication(save_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(save_dir.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in PUBLISHED_FILES):
            shutil.copy2(path, out_dir / path.name)
    if remote_code:
        export_remote_code(out_dir)
    if card is None:
        card = model_card(save_dir, **card_options)
    write_text(out_dir / "README.md", str(card), "README.md (model card)")
    scan_folder(out_dir, identities=_corpus_identities(save_dir, card_options.get("data_dir")))
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())


def _corpus_identities(save_dir: Path, data_dir) -> tuple[str, set[str]] | None:
    """The salted identity hashes `prepare` kept for the training corpus (`data_dir`, or `save_dir/corpus`)."""
    for folder in (data_dir, save_dir / "corpus"):
        if folder is not None and (found := load_identity_hashes(folder)) is not None:
            return found
    return None


def push(save_dir: str | Path, repo_id: str, private: bool = False, remote_code: bool = True,
         commit_message: str = "Upload CMR model with cmr-clip", token: str | None = None, endpoint: str | None = None,
         **card_options):
    """Stage `save_dir` (see `stage`), refuse it on PHI, create the repo (private if asked) and upload everything
    in one commit. Returns the commit info. `card_options` go to `model_card` (data_dir, license, datasets, ...)."""
    with tempfile.TemporaryDirectory(prefix="cmr-clip-push-") as staging:
        files = stage(save_dir, staging, remote_code=remote_code, repo_id=repo_id, **card_options)
        return upload_staged(staging, files, repo_id, "model", private, commit_message, token=token, endpoint=endpoint)


def upload_staged(staging: str | Path, files: list[str], repo_id: str, repo_type: str, private: bool,
                  commit_message: str, token: str | None = None, endpoint: str | None = None, **create_options):
    """Create the repo (`repo_type` model or space; `create_options` such as `space_sdk`) if missing and upload the
    staged `files` in one commit. Returns the commit info."""
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, **create_options)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(staging) / name)) for name in files]
    return api.create_commit(repo_id, operations=operations, commit_message=commit_message, repo_type=repo_type)


def push_pretrained(model, processor, repo_id: str, private: bool = False, **options):
    """`save_pretrained` of a model and its processor into a temporary folder, then `push` (card, remote code and
    PHI guard included) — the guarded counterpart of `model.push_to_hub(...)` / `processor.push_to_hub(...)`."""
    with tempfile.TemporaryDirectory(prefix="cmr-clip-save-") as save_dir:
        model.save_pretrained(save_dir)
        if processor is not None:
            processor.save_pretrained(save_dir)
        if getattr(model, "name_or_path", None) and (Path(model.name_or_path) / MODEL_PROMPTS_FILE).is_file():
            shutil.copy2(Path(model.name_or_path) / MODEL_PROMPTS_FILE, save_dir)
        return push(save_dir, repo_id, private=private, **options)


# Corpus columns that name a study: folder names of PACS exports are often accession numbers, so they are
# dropped before a dataset goes to the Hub unless the caller keeps them on purpose.
DROPPED_DATASET_COLUMNS = ("study_id",)


def stage_dataset(dataset, drop_columns=DROPPED_DATASET_COLUMNS, where: str = "dataset"):
    """What `push_dataset` uploads: the corpus (a folder written by `cmr-clip prepare`, or a Dataset /
    DatasetDict) without the columns that name studies, checked by the PHI guard (`PHIError`)."""
    if isinstance(dataset, (str, Path)):
        dataset = load_from_disk(str(dataset))
    splits = dataset.values() if type(dataset).__name__ == "DatasetDict" else [dataset]
    present = [c for c in drop_columns if all(c in split.column_names for split in splits)]
    if present:
        dataset = dataset.remove_columns(present)
    check_dataset(dataset, where)
    return dataset


def push_dataset(dataset, repo_id: str, private: bool = False, drop_columns=DROPPED_DATASET_COLUMNS,
                 token: str | None = None, **push_options):
    """`stage_dataset`, then `push_to_hub`: nothing is uploaded if the guard refuses."""
    staged = stage_dataset(dataset, drop_columns, f"dataset {repo_id}")
    return staged.push_to_hub(repo_id, private=private, token=token, **push_options)
