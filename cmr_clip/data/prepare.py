"""`cmr-clip prepare`: pair DICOM studies with their report impressions and write a training corpus.

    cmr-clip prepare --studies DIR --reports reports.jsonl --output-dir corpus/ [--num-proc 2]

Reports come as JSONL or CSV with `study_id` and `impression` (or a full `report`, from which the
impression section is extracted), and optionally `patient_id`, `split`, `labels`, `vendor`,
`field_strength`, `source` and `study`. Each study is `DIR/<source>` (a folder or a `.zip`; `source`
defaults to `study_id`). A source may hold several studies (a worklist export, a CD with several
visits): each report row then names its study with `study` (the index `cmr-clip inspect` lists, the
StudyInstanceUID or the study key), one row per study, and a row without it is skipped with a
`MultipleStudiesError` that lists the source's studies. No row ever holds frames of two studies; each
row's `metadata` carries the study's key (a short hash of its StudyInstanceUID). The result is a
`datasets.DatasetDict` (`train`, `validation`, `test`) saved with `save_to_disk`, whose rows hold the
study's candidate frames compactly (see `CMRStudyProcessor.compact`); the study processor is saved
beside it (`study_processor/`). Splits are by patient: no patient is in two splits. Patient ids are
used for that and never written. Studies that fail are reported (`skipped.jsonl`, by their row in the
reports file) and left out; a rerun reuses every study already processed.

From a PACS (`prepare(DICOMwebServer(...), ...)`, `cmr-clip prepare --dicomweb URL`), each row names its study
by `study_instance_uid` or `accession_number` (QIDO-RS); `study_id` may then be left out (the row is written
under `study-<hash of the key>`). These keys are used to match and never written out.

Privacy (`cmr_clip.privacy`): each impression is de-identified before it is written, with the study's own
identity read from its DICOM headers (names, ids, birth date, institution and physicians, in any case and
format) and the generic detectors; a `study_id` that looks like an identifier (or holds the patient's
identity) is replaced by a pseudonym (`study-<hash>`); the corpus `metadata` column holds no free text;
`identity_hashes.json` keeps salted hashes of the identity tokens (never the values) so that the guard
can check tokenizer vocabularies later. Nothing logged names a study by its id or path.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Array3D, Dataset, DatasetDict, Features, IterableDataset, Value, load_from_disk
from tokenizers import ByteLevelBPETokenizer
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tqdm.auto import tqdm
from transformers import BertTokenizer, PreTrainedTokenizerFast

from ..privacy import (
    StudyIdentity,
    deidentify,
    hash_token,
    identity_hashes,
    load_identity_hashes,
    names_someone,
    new_salt,
    safe_study_name,
    save_dataset,
    save_identity_hashes,
    shared_salt,
    without_path,
    write_json,
    write_jsonl,
)
from ..processing import CMRStudyError, CMRStudyProcessor
from ..processing.dicomweb import DICOMwebServer, DICOMwebSource
from ..processing.identity import read_identity
from .sharding import take_shard, write_manifest

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
CACHE = ".prepare-cache"
# Report columns naming a study on a PACS (`prepare` from a DICOMweb server): used to match, never written.
PACS_KEYS = ("study_instance_uid", "accession_number")
# The impression section's heading, and any heading that ends it: capitals followed by a colon anywhere
# (reports flattened into one line keep them), or a title-case heading at the start of a line.
_IMPRESSION = re.compile(r"\b(?:impressions?|conclusions?|summary)\s*:", re.IGNORECASE)
_HEADING = re.compile(r"\b[A-Z][A-Z /&-]{2,40}:|^\s*[A-Z][a-z]+(?: [A-Za-z]+){0,3}:", re.MULTILINE)


class ReportsError(ValueError):
    """The reports file cannot be used as it is."""


def extract_impression(report: str) -> str:
    """The IMPRESSION (or CONCLUSION / SUMMARY) section of a full report; the whole text if it has none."""
    heading = _IMPRESSION.search(report)
    if heading is None:
        return " ".join(report.split())
    following = _HEADING.search(report, heading.end())
    return " ".join(report[heading.end() : following.start() if following else len(report)].split())


def read_reports(path: str | Path) -> list[dict]:
    """Rows of a JSONL or CSV reports file, each with `study_id` and `impression`."""
    path = Path(path)
    if not path.is_file():
        raise ReportsError("the reports file does not exist (path not shown: it may name a patient). Check --reports.")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ReportsError(f"reports file, line {number}: not valid JSON ({err.msg}).") from err
    records, seen = [], set()
    for number, row in enumerate(rows, start=1):
        keys = {key: str(row.get(key) or "").strip() for key in PACS_KEYS}
        study_id = str(row.get("study_id") or "").strip() or _pseudonym(keys)
        if not study_id:
            raise ReportsError(f"reports file, row {number}: no study_id. Every row needs study_id (or, for a PACS, "
                               "study_instance_uid or accession_number) and impression (or report).")
        if study_id in seen:
            raise ReportsError(f"reports file, row {number}: its study_id appears twice (also in an earlier row).")
        seen.add(study_id)
        text = row.get("impression") or (extract_impression(row["report"]) if row.get("report") else "")
        if not str(text).strip():
            raise ReportsError(f"reports file, row {number}: empty impression; give 'impression' or a 'report' with one.")
        labels = row.get("labels")
        if isinstance(labels, str) and labels.strip():
            labels = json.loads(labels)
        records.append({
            "row": number,
            "study_id": study_id,
            "impression": " ".join(str(text).split()),
            "patient_id": str(row.get("patient_id") or study_id),
            "split": row.get("split") or None,
            "labels": labels or None,
            "vendor": row.get("vendor") or None,
            "field_strength": float(row["field_strength"]) if row.get("field_strength") not in (None, "") else None,
            "source": str(row.get("source") or study_id),
            "study": row["study"] if row.get("study") not in (None, "") else None,
            **keys,
        })
    return records


def _pseudonym(keys: dict) -> str:
    """The id a PACS-keyed row without study_id is written under: a hash of its key, never the key."""
    key = keys["study_instance_uid"] or keys["accession_number"]
    return "study-" + hashlib.sha256(key.encode()).hexdigest()[:12] if key else ""


def pacs_source(server: DICOMwebServer, record: dict) -> DICOMwebSource | None:
    """The PACS study a reports row names, by StudyInstanceUID or else AccessionNumber (None if by neither)."""
    if record["study_instance_uid"]:
        return server.study(record["study_instance_uid"])
    if record["accession_number"]:
        return server.query(AccessionNumber=record["accession_number"])
    return None


def assign_splits(records: list[dict], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Give every record a split, by patient. Given splits are kept (and checked); the rest are drawn so
    that all studies of a patient land in the same split."""
    by_patient: dict[str, set] = {}
    for record in records:
        if record["split"] is not None and record["split"] not in SPLITS:
            raise ReportsError(f"reports file, row {record['row']}: split {record['split']!r} is not one of {SPLITS}.")
        by_patient.setdefault(record["patient_id"], set()).add(record["split"])
    for patient, splits in by_patient.items():
        if len(splits - {None}) > 1:
            raise ReportsError(f"a patient's studies are assigned to several splits {sorted(splits - {None})}; "
                               "keep each patient in one split.")
    free = sorted(p for p, splits in by_patient.items() if splits == {None})
    rng = np.random.default_rng(seed)
    order = [free[i] for i in rng.permutation(len(free))]
    n_test = int(round(test_fraction * len(order)))
    n_val = int(round(val_fraction * len(order)))
    drawn = {p: "test" for p in order[:n_test]}
    drawn.update({p: "validation" for p in order[n_test : n_test + n_val]})
    for record in records:
        fixed = next(iter(by_patient[record["patient_id"]] - {None}), None)
        record["split"] = fixed or drawn.get(record["patient_id"], "train")


def find_study(studies_dir: Path, study_id: str) -> Path | None:
    for candidate in (studies_dir / study_id, studies_dir / f"{study_id}.zip"):
        if candidate.exists():
            return candidate
    return None


@dataclass
class _Job:
    study_id: str
    path: str | DICOMwebSource | None  # a folder or zip, or a study on a PACS
    cache: str
    processor: dict
    study: int | str | None = None
    impression: str = ""
    salt: str = ""


def scrub_record(job: _Job) -> dict:
    """The study's impression de-identified, the id it is written under and its identity's salted hashes."""
    identity = read_identity(job.path) if job.path is not None else StudyIdentity()
    study_id = "study-" + hash_token(job.study_id, job.salt)[:12] if names_someone(job.study_id, identity) else job.study_id
    return {"impression": deidentify(job.impression, identity), "corpus_id": study_id,
            "identity_hashes": sorted(identity_hashes(identity, job.salt))}


def _cache_file(cache_dir: Path, record: dict) -> Path:
    """One cache file per report row and the study it names (a changed `source` or `study` is not reused)."""
    name = "\0".join([record["study_id"], record["source"], str(record["study"])] + [record[k] for k in PACS_KEYS if record[k]])
    return cache_dir / (hashlib.sha1(name.encode()).hexdigest() + ".npz")


def process_job(job: _Job) -> dict:
    cache = Path(job.cache)
    if job.path is None:
        return {"study_id": job.study_id, "ok": False, "error": "StudyNotFound",
                "message": "no folder or zip named after the study (or its source) in --studies, or, from a PACS, "
                           "no study_instance_uid or accession_number in its row"}
    if cache.is_file():
        return {"study_id": job.study_id, "ok": True, "cached": True, **scrub_record(job)}
    try:
        frames, slots, meta = CMRStudyProcessor(**job.processor).compact(job.path, study=job.study)
    except Exception as err:  # noqa: BLE001 - a batch job reports and skips a bad study
        local = isinstance(job.path, str)
        message = deidentify(without_path(str(err), job.path, Path(job.path).name) if local else str(err))  # ours carry no path; others' may
        return {"study_id": job.study_id, "ok": False, "error": type(err).__name__, "message": message}
    partial = cache.with_suffix(".partial.npz")
    np.savez(partial, frames=frames, slots=slots, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    partial.replace(cache)
    return {"study_id": job.study_id, "ok": True, "cached": False, **scrub_record(job)}


def _load_cached(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with np.load(path) as data:
        return data["frames"], data["slots"], json.loads(data["meta"].tobytes().decode())


def _rows(records: list[dict]) -> Iterator[dict]:
    for record in records:
        yield corpus_row(record, *_load_cached(Path(record["cache"])))


def corpus_row(record: dict, frames: np.ndarray, slots: np.ndarray, meta: dict) -> dict:
    """A corpus row: the compact frames, the impression, labels and stratification fields; no patient id. The
    record's `study_id` and `impression` are the de-identified ones (`scrub_record`)."""
    return {
        "study_id": record["study_id"],
        "frames": frames,
        "slots": slots,
        "impression": record["impression"],
        "labels": json.dumps(record["labels"]) if record["labels"] is not None else "",
        "vendor": record["vendor"] or "",
        "field_strength": record["field_strength"] if record["field_strength"] is not None else float("nan"),
        "metadata": json.dumps(meta),
    }


def corpus_features(num_frames: int, image_size: int):
    return Features({
        "study_id": Value("string"),
        "frames": Array3D(shape=(None, image_size, image_size), dtype="uint8"),
        "slots": Array2D(shape=(num_frames, 2), dtype="int32"),
        "impression": Value("string"),
        "labels": Value("string"),
        "vendor": Value("string"),
        "field_strength": Value("float32"),
        "metadata": Value("string"),
    })


def prepare(
    studies_dir: str | Path,
    reports: str | Path,
    out_dir: str | Path,
    processor=None,
    num_proc: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    progress: bool = True,
    num_shards: int = 1,
    shard_index: int = 0,
):
    """Write a prepared corpus to `out_dir` and return the `DatasetDict` (see the module docstring).
    `studies_dir` is a folder of studies or a `DICOMwebServer` (a PACS; see the module docstring). With
    `num_shards` > 1, only shard `shard_index` of the studies (see `cmr_clip.data.sharding`)."""
    pacs = studies_dir if isinstance(studies_dir, DICOMwebServer) else None
    studies_dir, out_dir = (studies_dir if pacs else Path(studies_dir)), Path(out_dir)
    if pacs is None and not studies_dir.is_dir():
        raise FileNotFoundError("--studies is not a directory of studies (path not shown: it may name a patient).")
    processor = processor if processor is not None else CMRStudyProcessor()
    records = read_reports(reports)
    assign_splits(records, val_fraction, test_fraction, seed)
    if num_shards > 1:  # after the splits, which are drawn over every study
        records = take_shard(records, num_shards, shard_index)
    cache_dir = out_dir / CACHE
    cache_dir.mkdir(parents=True, exist_ok=True)
    settings = processor.to_dict()
    settings.pop("feature_extractor_type", None)
    settings.pop("processor_class", None)
    # A cache made with other processor settings must not be reused.
    stamp = cache_dir / "processor.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != settings:
        for stale in cache_dir.glob("*.npz"):
            stale.unlink()
    stamp.write_text(json.dumps(settings, sort_keys=True))

    fresh_salt = shared_salt(Path(reports).read_bytes()) if num_shards > 1 else new_salt()
    salt, known_hashes = load_identity_hashes(out_dir) or (fresh_salt, set())
    jobs = [_Job(r["study_id"], pacs_source(pacs, r) if pacs else str(p) if (p := find_study(studies_dir, r["source"])) else None,
                 str(_cache_file(cache_dir, r)), settings, r["study"], r["impression"], salt) for r in records]
    results = _run_jobs(jobs, num_proc, progress)
    failed = {r["study_id"]: r for r in results if not r["ok"]}
    rows = {r["study_id"]: r["row"] for r in records}
    for study_id, result in failed.items():
        logger.warning("skipped the study of reports row %d: %s: %s", rows[study_id], result["error"], result["message"])
    scrubbed = {r["study_id"]: r for r in results if r["ok"]}
    kept = [{**r, "study_id": scrubbed[r["study_id"]]["corpus_id"], "impression": scrubbed[r["study_id"]]["impression"],
             "cache": str(_cache_file(cache_dir, r))} for r in records if r["study_id"] in scrubbed]
    save_identity_hashes(out_dir, salt, known_hashes.union(*(set(r["identity_hashes"]) for r in scrubbed.values())))

    features = corpus_features(processor.num_frames, processor.image_size)
    corpus = DatasetDict({
        split: Dataset.from_generator(_rows, features=features, cache_dir=str(cache_dir / "arrow"),
                                      gen_kwargs={"records": [r for r in kept if r["split"] == split]})
        for split in SPLITS if any(r["split"] == split for r in kept)
    })
    save_dataset(corpus, out_dir, "prepared corpus")
    corpus = load_from_disk(str(out_dir))  # served from the saved copy, so the generator's cache can go
    shutil.rmtree(cache_dir / "arrow", ignore_errors=True)
    processor.save_pretrained(out_dir / "study_processor")
    report = {
        "studies": len(records),
        "prepared": len(kept),
        "skipped": len(failed),
        "splits": {split: len(ds) for split, ds in corpus.items()},
        "patients_per_split": {s: len({r["patient_id"] for r in kept if r["split"] == s}) for s in SPLITS},
    }
    if num_shards > 1:
        write_manifest(out_dir, num_shards, shard_index, kept)
    write_json(out_dir / "prepare_report.json", report)
    write_jsonl(out_dir / "skipped.jsonl", ({"row": rows[study_id], "study_id": safe_study_name(study_id, rows[study_id] - 1),
                                             "error": result["error"], "message": result["message"]}
                                            for study_id, result in failed.items()))
    return corpus


def _run_jobs(jobs: list[_Job], num_proc: int, progress: bool) -> list[dict]:
    bar = tqdm(total=len(jobs), desc="preparing studies", unit="study", disable=not progress)
    results = []
    if num_proc <= 1:
        for job in jobs:
            results.append(process_job(job))
            bar.update(1)
    else:
        # Spawned, not forked: a fork of a process whose torch thread pool is running can hang in the
        # worker's first resize. One thread per worker: the processes are the parallelism.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=num_proc, mp_context=context, initializer=_single_threaded) as pool:
            for result in pool.map(process_job, jobs, chunksize=4):
                results.append(result)
                bar.update(1)
    bar.close()
    return results


def _single_threaded() -> None:
    torch.set_num_threads(1)


WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 2000):
    """A BERT WordPiece tokenizer (lower-cased) learned from `texts` (de-identified: the corpus's impressions),
    saved to `out_dir`, for a text tower trained from scratch.

    The vocabulary is every character seen (alone and as a `##` continuation, so that any word can be
    spelled) and the most frequent whole words, ties in alphabetical order, up to `vocab_size`. A word must
    occur twice to become a token, so a name that slipped into one report does not. The same texts always
    give the same ids: the `tokenizers` WordPiece trainer numbers its `##` pieces in hash-map order, different
    in every process, so a fixed-seed run trained on its vocabulary could not be repeated.
    """
    normalizer, pre_tokenizer = BertNormalizer(lowercase=True), BertPreTokenizer()
    words = Counter(word for text in texts
                    for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({char for word in words for char in word})
    alphabet = [*characters, *(f"##{char}" for char in characters)]
    frequent = [word for word, count in sorted(words.items(), key=lambda item: (-item[1], item[0]))
                if count >= 2 and len(word) > 1]
    tokens = [*WORDPIECE_SPECIALS, *alphabet, *frequent][: max(vocab_size, len(WORDPIECE_SPECIALS) + len(alphabet))]
    # transformers 5's BertTokenizer takes the vocabulary itself (a `vocab_file` would be ignored).
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def train_report_tokenizer(texts: list[str], vocab_size: int = 1000, out_dir: str | Path | None = None):
    """A byte-level BPE tokenizer (cased, exact round trip) learned from `texts`, for a CMR-TARGET decoder
    trained from scratch; `<|endoftext|>` is its start and end token. The video and sentence tokens are
    added by `CMRTargetProcessor.add_special_tokens`."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    if out_dir is not None:
        tokenizer.save_pretrained(out_dir)
    return tokenizer


def stream_corpus(studies_dir: str | Path, reports: str | Path, processor=None, split: str | None = None,
                  val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0):
    """The same rows as `prepare`, as a `datasets.IterableDataset` processed on the fly, for archives too
    large to preprocess on one disk. The study list is the shard list, so `split_dataset_by_node` and
    data-loader workers each take their own studies. Failing studies are logged and skipped."""
    processor = processor if processor is not None else CMRStudyProcessor()
    records = read_reports(reports)
    assign_splits(records, val_fraction, test_fraction, seed)
    if split is not None:
        records = [r for r in records if r["split"] == split]
    settings = {k: v for k, v in processor.to_dict().items() if k not in ("feature_extractor_type", "processor_class")}
    return IterableDataset.from_generator(
        _stream_rows,
        features=corpus_features(processor.num_frames, processor.image_size),
        gen_kwargs={"records": records, "studies_dir": str(studies_dir), "settings": settings},
    )


def _stream_rows(records: list[dict], studies_dir: str, settings: dict) -> Iterator[dict]:
    processor = CMRStudyProcessor(**settings)
    salt = new_salt()
    for record in records:
        path = find_study(Path(studies_dir), record["source"])
        try:
            if path is None:
                raise FileNotFoundError("no folder or zip named after the study (or its source)")
            frames, slots, meta = processor.compact(path, study=record["study"])
        except (CMRStudyError, FileNotFoundError) as err:
            logger.warning("skipped the study of reports row %d: %s", record["row"], err)
            continue
        scrubbed = scrub_record(_Job(record["study_id"], str(path), "", settings, record["study"], record["impression"], salt))
        yield corpus_row({**record, "study_id": scrubbed["corpus_id"], "impression": scrubbed["impression"]},
                         frames, slots, meta)
