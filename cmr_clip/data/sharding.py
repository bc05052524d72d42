"""Preparation split over many machines: `cmr-clip prepare --num-shards N --shard-index I` prepares one
part of the studies, `cmr-clip prepare-merge` joins the parts into the corpus one `prepare` would write.

    cmr-clip prepare --studies DIR --reports reports.jsonl --output-dir shards/ --num-shards 64 --shard-index $I
    cmr-clip prepare-merge --shards shards/ --output-dir corpus/ [--train-tokenizer 8000]

Every shard reads the whole reports file and draws the patient-level splits over all of it before taking
its own studies, so a patient's studies share one split whichever shards they fall in. A study belongs to
shard `hash(study_id) mod N`: its shard never changes when other studies are added. Each shard is a
prepared corpus of its own in `OUT/shard-I-of-N/` with a manifest (`shard.json`) of its studies' rows
in the reports file, from which the merge restores the unsharded order. The shards draw the salt of their
identity hashes from the reports file, so the merge can check a vocabulary learned from all of them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from datasets import DatasetDict, concatenate_datasets, load_from_disk

from ..privacy import load_identity_hashes, save_dataset, save_identity_hashes, write_json, write_jsonl

MANIFEST = "shard.json"
STUDY_PROCESSOR = "study_processor"


class ShardsError(ValueError):
    """Shard outputs that cannot be merged as they are."""


def shard_of(study_id: str, num_shards: int) -> int:
    """The shard a study belongs to: a hash of its id, independent of every other study."""
    return int.from_bytes(hashlib.sha256(study_id.encode("utf-8")).digest()[:8], "big") % num_shards


def shard_dir_name(shard_index: int, num_shards: int) -> str:
    return f"shard-{shard_index:05d}-of-{num_shards:05d}"


def check_shard(num_shards: int, shard_index: int) -> None:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index must be in 0..{num_shards - 1} for --num-shards {num_shards}; got {shard_index}.")


def take_shard(records: list[dict], num_shards: int, shard_index: int) -> list[dict]:
    """This shard's records (splits already assigned)."""
    check_shard(num_shards, shard_index)
    return [r for r in records if shard_of(r["study_id"], num_shards) == shard_index]


def write_manifest(out_dir: Path, num_shards: int, shard_index: int, kept: list[dict]) -> None:
    """The shard's manifest: each prepared study's row in the reports file, under the id the corpus writes it
    with (de-identified; the reports' own ids stay out), so that the merge can restore the unsharded order."""
    places = {r["study_id"]: r["row"] for r in kept}
    manifest = {"num_shards": num_shards, "shard_index": shard_index, "places": places}
    (out_dir / MANIFEST).write_text(json.dumps(manifest))


def read_manifests(shards_dir: Path) -> dict[int, tuple[Path, dict]]:
    """Shard index -> (shard folder, manifest) for every shard under `shards_dir`; all N must be there."""
    found = {}
    for folder in sorted(p for p in shards_dir.iterdir() if (p / MANIFEST).is_file()) if shards_dir.is_dir() else []:
        manifest = json.loads((folder / MANIFEST).read_text())
        found[manifest["shard_index"]] = (folder, manifest)
    if not found:
        raise ShardsError(f"--shards {shards_dir} holds no shard ({MANIFEST}); prepare them with "
                          "`cmr-clip prepare --num-shards N --shard-index I --output-dir` that folder.")
    counts = {manifest["num_shards"] for _, manifest in found.values()}
    if len(counts) > 1:
        raise ShardsError(f"the shards were prepared with different --num-shards {sorted(counts)}; prepare all with one.")
    missing = sorted(set(range(counts.pop())) - set(found))
    if missing:
        raise ShardsError(f"shard indices {missing} are missing or unfinished; run `cmr-clip prepare` with those "
                          "--shard-index values, then merge again.")
    for index, (folder, _) in found.items():
        if not (folder / "prepare_report.json").is_file():
            raise ShardsError(f"shard {index} is unfinished (no prepare_report.json); run its `cmr-clip prepare` again.")
    return dict(sorted(found.items()))


def study_processor_settings(folder: Path) -> str:
    return "".join(p.read_text() for p in sorted((folder / STUDY_PROCESSOR).glob("*.json")))


def merge_shards(shards_dir: str | Path, out_dir: str | Path):
    """Join the shards under `shards_dir` into one corpus in `out_dir` (rows in the reports file's order,
    each in the split its shard gave it) and return it as a `DatasetDict`."""
    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    shards = read_manifests(shards_dir)
    settings = {study_processor_settings(folder) for folder, _ in shards.values()}
    if len(settings) > 1:
        raise ShardsError("the shards were prepared with different study processor settings (layout, frames, "
                          "image size); prepare them all with the same options.")
    places = {study: place for _, manifest in shards.values() for study, place in manifest["places"].items()}
    parts: dict[str, list] = {}
    for folder, _ in shards.values():
        if (folder / "dataset_dict.json").is_file():  # a shard whose studies all failed has no corpus
            for split, dataset in load_from_disk(str(folder)).items():
                parts.setdefault(split, []).append(dataset)
    corpus = DatasetDict({split: in_reports_order(concatenate_datasets(datasets), places)
                          for split, datasets in parts.items()})
    save_dataset(corpus, out_dir, "merged corpus")
    corpus = load_from_disk(str(out_dir))
    first = next(iter(shards.values()))[0]
    shutil.copytree(first / STUDY_PROCESSOR, out_dir / STUDY_PROCESSOR, dirs_exist_ok=True)
    write_merged_reports(shards, out_dir, corpus)
    merge_identity_hashes([folder for folder, _ in shards.values()], out_dir)
    return corpus


def merge_identity_hashes(folders: list[Path], out_dir: Path) -> None:
    """One identity-hash file for the merged corpus, so its vocabulary can be checked: the shards share a salt
    (drawn from the reports file they all read), so their hash sets join."""
    found = [item for folder in folders if (item := load_identity_hashes(folder)) is not None]
    if not found:
        return
    salts = {salt for salt, _ in found}
    if len(salts) > 1:
        raise ShardsError("the shards were prepared from different reports files (their identity salts differ); "
                          "prepare every shard from the same reports file.")
    save_identity_hashes(out_dir, salts.pop(), set().union(*(hashes for _, hashes in found)))


def in_reports_order(dataset, places: dict[str, int]):
    ids = list(dataset["study_id"])
    return dataset.select(sorted(range(len(ids)), key=lambda i: places[ids[i]]))


def write_merged_reports(shards: dict[int, tuple[Path, dict]], out_dir: Path, corpus) -> None:
    """`skipped.jsonl` of every shard (in the reports file's order) and the merged `prepare_report.json`."""
    skipped = []
    for folder, _ in shards.values():
        lines = (folder / "skipped.jsonl").read_text().splitlines() if (folder / "skipped.jsonl").is_file() else []
        skipped.extend(json.loads(line) for line in lines if line.strip())
    skipped.sort(key=lambda row: row["row"])
    write_jsonl(out_dir / "skipped.jsonl", skipped)
    reports = [json.loads((folder / "prepare_report.json").read_text()) for folder, _ in shards.values()]
    merged = {
        "studies": sum(r["studies"] for r in reports),
        "prepared": sum(r["prepared"] for r in reports),
        "skipped": len(skipped),
        "splits": {split: len(dataset) for split, dataset in corpus.items()},
        "shards": len(shards),
    }
    write_json(out_dir / "prepare_report.json", merged)

