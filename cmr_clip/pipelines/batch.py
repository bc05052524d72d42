"""The batch engine behind `cmr-clip predict`: zero-shot answers for every study of an archive, as one table.

    from cmr_clip.pipelines.batch import PredictSettings, predict
    predict("exports/", "predictions/", "cmr-clip-demo", PredictSettings(batch_size=8, num_workers=2))

Sources (`list_sources`, the one place they are enumerated): a folder of study folders or zips (a folder
holding no folder or zip is one study), a CSV (a `path` column, else the first) or text list of study paths,
a prepared corpus (its `study_id` is the key), or a PACS: a `DICOMwebSource` (a QIDO-RS query or one study),
a `DICOMwebServer` (every MR study) or a list of them, one source per study, keyed in the table by
`privacy.study_key` (a hash of the StudyInstanceUID, as `inspect` and `prepare` name studies; never the UID),
read in workers over connections of their own (`own_connections`). The same studies exported to disk have the
same rows under their folder names. DICOM is read in `torch.utils.data.DataLoader` workers (each runs the
model's study processor on one source) while the main process embeds and scores the studies already read. A source holding several studies gives one row per study when `expand_studies` (the processor's
`expand_studies`), else one error row (`MultipleStudiesError`). A source that cannot be read gives an error row
with the reason; the others go on.

Resumable: each source's rows are appended, through the privacy guard, as one line of a JSONL journal
(`journal/rank-N.jsonl`) as soon as they are scored; a rerun into the same output folder skips the sources
the journal holds (known by a salted hash of their name, never the name itself) and the table is rebuilt from
the journal in source order, so an interrupted and resumed run writes the table an uninterrupted run writes.
A rerun with another model or other settings (findings, estimates, prompts, the precision the model runs in
as resolved, so `auto` and the dtype it picked agree, ...) is refused.
Under `accelerate launch` each process takes every N-th pending source and process 0 writes the table.

Output: `predictions.parquet` and `predictions.csv`, one row per study (see `table_row`), each row passed by
`privacy.check_json`; with `save_embeddings`, `embeddings.safetensors` (row key -> study embedding); with a
CMR-TARGET `report_model`, each row's draft impression (`draft_impression`, a draft for a reader to edit).
With `store_results` (PACS sources only), each answered study's findings, estimates and draft go back to its
server as a DICOM SR (`processing/dicom_results.store_results`), with `store_montage` a Secondary Capture of
the frames used too (the study is read again in the main process for it); the row's `sr_status` says
`stored` or `failed: <reason>` (a failed store is recorded and the run goes on).
"""

from __future__ import annotations

import csv
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Dataset
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import pipeline

from ..data.collate import StudyCollator
from ..data.corpus import load_prepared
from ..data.dataset import StudyTextDataset
from ..embeddings import encode_videos
from ..precision import Precision
from ..privacy import (
    append_jsonl,
    check_json,
    deidentify,
    hash_token,
    new_salt,
    safe_study_name,
    study_key,
    without_path,
    write_json,
)
from ..processing.dicom_results import load_highdicom, store_results
from ..processing.dicomweb import DICOMwebSource, as_dicomweb_source
from ..processing.errors import CMRStudyError
from ..processing.layout import StudyLayout
from ..processing.identity import read_identity
from ..processing.reader import read_study

TABLE = "predictions"
JOURNAL_DIR = "journal"
SALT_FILE = "salt"  # the salt of the journal's source hashes, kept with the journal
RUN_FILE = "run.json"  # what the journal's rows were answered with: a resumed run must ask the same
EMBEDDINGS_FILE = "embeddings.safetensors"


@dataclass(frozen=True)
class StudySource:
    """One source of a batch: `name` (the user's name for it: a folder or zip name, a corpus study id; hashed for
    the journal, shown only through `safe_study_name`), `position` in the listing, and where it is read from:
    `location` (anything `read_study` accepts: a path, or a `DICOMwebSource` of one study, whose name is its
    StudyInstanceUID) or `row` of a prepared corpus's `split`."""

    name: str
    position: int
    location: str | DICOMwebSource | None = None
    split: str | None = None
    row: int | None = None


@dataclass
class PredictSettings:
    """What `predict` asks of each study and how it runs (each field is a `cmr-clip predict` flag)."""

    findings: list[str] | None = None
    """Findings of the prompt set to judge (default: every finding)."""
    estimates: list[str] | None = None
    """Quantities of the prompt set to estimate, e.g. lvef."""
    prompt_set: str | None = None
    """Prompt set JSON (default: the model's zero_shot_prompts.json, else the built-in set)."""
    score_unassessable: bool = False
    """Also give probabilities for findings a study lacks the views for (still marked not assessable)."""
    expand_studies: bool = True
    """A source holding several studies gives one row per study (else one MultipleStudiesError row)."""
    batch_size: int = 8
    """Studies per model call."""
    num_workers: int = 2
    """DataLoader worker processes reading DICOM while the model runs (0: read in the main process)."""
    device: str | None = None
    """Where the model runs, e.g. cpu, cuda, cuda:1 (default: Accelerate's device for this process)."""
    dtype: str = "auto"
    """The model's dtype: auto, float32, bfloat16 or float16 (see `cmr_clip.precision`)."""
    quantize: str | None = None
    """None or int8: dynamic int8 quantisation of the model's Linear layers (torchao)."""
    compile: bool = False
    """Run the video towers through torch.compile (`cmr_clip.precision`): a slow first batch, then faster."""
    store_results: bool = False
    """PACS sources only: store each study's answer back on its server as a DICOM SR (research output)."""
    store_montage: bool = False
    """With store_results: also store a Secondary Capture montage of the frames used (fetched again for it)."""
    save_embeddings: bool = False
    """Also write embeddings.safetensors (row key -> study embedding)."""
    report_model: str | None = None
    """A CMR-TARGET folder: add each study's draft impression (a draft for a reader to edit)."""
    split: str | None = None
    """With a prepared corpus: only this split (default: every split)."""
    progress: bool = True
    """Show a progress bar with the ETA."""


def list_sources(source, split: str | None = None) -> tuple[list[StudySource], str | None]:
    """The studies to predict and, for a prepared corpus, its folder: a corpus folder (`dataset_dict.json`;
    `split`: one split, default all), a CSV or text list of paths, a folder of study folders and zips, or PACS
    sources (a `DICOMwebSource`, a `DICOMwebServer` or a list of them: one source per study they name)."""
    remote = [as_dicomweb_source(item) for item in (source if isinstance(source, (list, tuple)) else [source])]
    if all(remote):
        return _pacs_sources(remote), None
    path = Path(source)
    if (path / "dataset_dict.json").is_file():
        return _corpus_sources(path, split), str(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".txt"):
        return _listed_sources(path), None
    if path.is_dir():
        children = sorted(p for p in path.iterdir() if p.is_dir() or p.suffix.lower() == ".zip")
        found = children or [path]
        return [StudySource(p.name, i, location=str(p)) for i, p in enumerate(found)], None
    raise FileNotFoundError(f"predict's source {source} is not a folder, a .csv or .txt list or a prepared corpus. "
                            "Pass a folder of study folders or zips, a list of study paths, or a `cmr-clip prepare` corpus.")


def _listed_sources(path: Path) -> list[StudySource]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        column = rows[0].index("path") if rows and "path" in rows[0] else 0
        entries = [row[column] for row in rows[1:] if row and row[column].strip()]
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    located = [Path(e) if Path(e).is_absolute() else path.parent / e for e in entries]
    return [StudySource(p.name, i, location=str(p)) for i, p in enumerate(located)]


def _pacs_sources(remote: list[DICOMwebSource]) -> list[StudySource]:
    """One source per study the PACS sources name (a query's studies in the server's QIDO-RS order)."""
    servers = {uid: item.server for item in remote for uid in item.study_uids()}
    return [StudySource(uid, i, location=server.study(uid)) for i, (uid, server) in enumerate(servers.items())]


def _corpus_sources(path: Path, split: str | None) -> list[StudySource]:
    corpus, _ = load_prepared(str(path))
    if split is not None and split not in corpus:
        raise ValueError(f"the corpus has no split {split!r}; its splits are {list(corpus)}. Pass one of them or none.")
    names = [split] if split else list(corpus)
    pairs = [(name, row, study_id) for name in names for row, study_id in enumerate(corpus[name]["study_id"])]
    return [StudySource(study_id, i, split=name, row=row) for i, (name, row, study_id) in enumerate(pairs)]


class SourceReader(torch.utils.data.Dataset):
    """Reads one source per item, in a DataLoader worker: its studies' pixel values and metadata, or its errors."""

    def __init__(self, sources: list[StudySource], processor, expand_studies: bool, corpus_dir: str | None = None):
        self.sources, self.processor, self.expand_studies = sources, processor, expand_studies
        self.corpus, self.collate = {}, None
        if corpus_dir is not None:
            corpus, study_processor = load_prepared(corpus_dir)
            self.corpus = {name: StudyTextDataset(split) for name, split in corpus.items()}
            self.collate = StudyCollator(study_processor)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        source = self.sources[index]
        if source.split is not None:
            return self._corpus_study(source)
        try:
            key = source_key(source)
            batch = self.processor(source.location, skip_errors=True, expand_studies=self.expand_studies)
        except CMRStudyError as error:  # a source that cannot even be listed: not there, not a study
            key = source_key(source, identity=False)
            return {"key": key, "studies": [], "errors": [{"error": _reason(error, source)}]}
        several = len(batch["study_metadata"]) + len(batch["errors"]) > 1
        studies = [{"key": _row_key(key, meta.get("study"), several), "pixel_values_videos": pixels, "metadata": meta}
                   for pixels, meta in zip(batch["pixel_values_videos"], batch["study_metadata"])]
        errors = [{"key": _row_key(key, item.get("study"), several),
                   "error": f"{item['error']}: {_scrub(item['message'], source)}"} for item in batch["errors"]]
        return {"key": key, "studies": studies, "errors": errors}

    def _corpus_study(self, source: StudySource) -> dict:
        item = self.corpus[source.split][source.row]
        meta = json.loads(self.corpus[source.split].split[source.row]["metadata"] or "{}")
        pixels = self.collate([{"frames": item["frames"]}])["pixel_values_videos"][0]
        return {"key": source.name, "studies": [{"key": source.name, "pixel_values_videos": pixels, "metadata": meta}],
                "errors": []}


def source_key(source: StudySource, identity: bool = True) -> str:
    """How a source's rows name it: a PACS study by `study_key` (never its UID), a path by its name unless that
    could name the patient (`safe_study_name`; checked against the study's `identity` when it can be read)."""
    if isinstance(source.location, DICOMwebSource):
        return study_key(source.name)
    return safe_study_name(source.name, source.position, read_identity(source.location) if identity else None)


def _row_key(key: str, study: str | None, several: bool) -> str:
    """A study's row key: the source's safe name, with the study's key when the source holds several."""
    return f"{key}/{study}" if several and study else key


def _scrub(message: str, source: StudySource) -> str:
    """A reading error's message without the source's path or names (ours carry none; libraries' may)."""
    return deidentify(without_path(message, source.location, source.name))


def _reason(error: Exception, source: StudySource) -> str:
    return f"{type(error).__name__}: {_scrub(str(error), source)}"


def own_connections(worker_id: int) -> None:
    """A DataLoader worker's start: its PACS sources get connections of their own, as a forked worker would
    otherwise share the main process's open sockets. A pickle round trip rebuilds them (`DICOMwebServer` drops
    its client, a `requests.Session` its connection pools)."""
    reader = torch.utils.data.get_worker_info().dataset
    if any(isinstance(source.location, DICOMwebSource) for source in reader.sources):
        reader.sources = pickle.loads(pickle.dumps(reader.sources))


def _as_is(item):
    """The DataLoader's collate: a source's studies stay as the reader gave them (the default would stack them)."""
    return item


class Predictor:
    """The models of a batch run: the zero-shot pipeline (and a CMR-TARGET) scoring studies already read."""

    def __init__(self, model: str | Path, settings: PredictSettings, device):
        precision = {"dtype": settings.dtype, "quantize": settings.quantize, "compile": settings.compile}
        self.settings = settings
        self.classify = pipeline("zero-shot-cmr", model=str(model), prompt_set=settings.prompt_set, device=device,
                                 **precision)
        self.precision: Precision = self.classify.precision  # as resolved for the device
        self.processor = self.classify.feature_extractor
        self.draft = None
        if settings.report_model:
            self.draft = pipeline("cmr-report-generation", model=str(settings.report_model), device=device,
                                  **precision)
            if self.draft.feature_extractor.to_dict() != self.processor.to_dict():
                raise ValueError(f"--report-model {settings.report_model} reads studies with another study processor "
                                 "than the CMR-CLIP; predict reads each study once, so use a CMR-TARGET trained on "
                                 "this CMR-CLIP's processor.")

    def store(self, source: StudySource, answered: dict) -> str:
        """`store_answer` with the montage of the processor's layout when `store_montage` asks for it."""
        return store_answer(source, answered, self.processor.study_layout if self.settings.store_montage else None)

    def answer(self, studies: list[dict]) -> list[dict]:
        """Per study (as `SourceReader` gives it): the pipeline's answer, its embedding and its draft."""
        settings, model = self.settings, self.classify.model
        embeds = []
        for start in range(0, len(studies), settings.batch_size):
            pixels = torch.stack([s["pixel_values_videos"] for s in studies[start:start + settings.batch_size]])
            embeds.append(encode_videos(model, pixels.to(self.classify.device, model.dtype)).cpu())
        embeds = torch.cat(embeds) if embeds else torch.zeros(0)
        inputs = [{"video_embeds": e, "study_metadata": s["metadata"]} for e, s in zip(embeds, studies)]
        answers = self.classify(inputs, findings=settings.findings or True, estimate=settings.estimates or None,
                                score_unassessable=settings.score_unassessable, batch_size=settings.batch_size)
        drafts = [None] * len(studies)
        if self.draft is not None:
            drafts = self.draft([{"pixel_values_videos": s["pixel_values_videos"]} for s in studies],
                                batch_size=settings.batch_size)
        return [{"answer": a, "embedding": e, "draft": d} for a, e, d in zip(answers, embeds, drafts)]


def table_row(key: str, answer: dict | None = None, draft: dict | None = None, error: str | None = None,
              stored: str | None = None) -> dict:
    """One study's row: `study` (its safe key), `status` (ok or error) and `error`; views found and missing, the
    share of the model's layout covered and whether it is low, warnings; per finding `<name>_probability`,
    `<name>_decision` (present, absent, or empty without a threshold), `<name>_assessable` and `<name>_reason`;
    per estimate `<name>_estimate`; `draft_impression` with a report model; `sr_status` (`stored` or
    `failed: <reason>`) when the answer was stored back on the PACS."""
    row = {"study": key, "status": "error" if error else "ok", "error": error or ""}
    if answer is None:
        return row
    coverage = answer.get("coverage") or {}
    row.update({"views_found": ";".join(coverage.get("views_found", [])),
                "missing_views": ";".join(coverage.get("missing_views", [])),
                "view_coverage": coverage.get("fraction"), "low_coverage": coverage.get("low"),
                "warnings": " | ".join(answer.get("warnings", []))})
    for item in sorted(answer.get("findings", []), key=lambda item: item["finding"]):
        name = item["finding"]
        row[f"{name}_probability"] = item.get("score")
        row[f"{name}_decision"] = "" if "present" not in item else ("present" if item["present"] else "absent")
        row[f"{name}_assessable"] = item["assessable"]
        row[f"{name}_reason"] = item.get("reason", "")
    for name, value in answer.get("estimates", {}).items():
        row[f"{name}_estimate"] = value
    if draft is not None:
        row["draft_impression"] = draft["generated_impression"]
    if stored is not None:
        row["sr_status"] = stored
    return row


def source_rows(item: dict, answered: list[dict], stored: list[str] | None = None) -> list[dict]:
    """The journal entries of one source, in the processor's order: studies answered (with their SR's store
    status, when stored), then its errors."""
    stored = stored or [None] * len(answered)
    rows = [{"row": table_row(s["key"], a["answer"], a["draft"], stored=t), "embedding": a["embedding"].tolist()}
            for s, a, t in zip(item["studies"], answered, stored)]
    return rows + [{"row": table_row(e.get("key", item["key"]), error=e["error"])} for e in item["errors"]]


def predict(source: str | Path, output_dir: str | Path, model: str | Path,
            settings: PredictSettings | None = None) -> dict:
    """Answer every study of `source` into `output_dir` (see the module doc); returns `done`, `failed` (rows),
    `resumed` (sources found in the journal) and `table` (the Parquet file), the counts on process 0."""
    settings = settings or PredictSettings()
    # Without a GPU, Accelerate joins the processes a launcher started only when told to use the CPU.
    state = PartialState(cpu=not torch.accelerator.is_available())
    out = Path(output_dir)
    journal = out / JOURNAL_DIR
    sources, corpus_dir = list_sources(source, settings.split)
    if settings.store_results:
        check_storable(sources)
    predictor = Predictor(model, settings, settings.device or state.device)
    if state.is_main_process:
        start_journal(journal, run_settings(model, settings, predictor.precision))
    state.wait_for_everyone()
    salt = (journal / SALT_FILE).read_text().strip()
    finished = read_journal(journal)
    unfinished = [s for s in sources if hash_token(s.name, salt) not in finished]
    pending = unfinished[state.process_index::state.num_processes]
    reader = SourceReader(pending, predictor.processor, settings.expand_studies, corpus_dir)
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=settings.num_workers, collate_fn=_as_is,
                                         worker_init_fn=own_connections)
    progress = tqdm(total=len(pending), desc="predict", unit="source",
                    disable=not (settings.progress and state.is_main_process))
    buffer = []
    for item, position in zip(loader, pending):
        buffer.append((hash_token(position.name, salt), position, item))
        if sum(len(i["studies"]) for *_, i in buffer) >= settings.batch_size:
            _flush(buffer, predictor, journal / f"rank-{state.process_index}.jsonl", progress)
    _flush(buffer, predictor, journal / f"rank-{state.process_index}.jsonl", progress)
    progress.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    finished = read_journal(journal)
    return {**write_table(sources, salt, finished, out, settings.save_embeddings),
            "resumed": len(sources) - len(unfinished), "precision": predictor.precision}


def check_storable(sources: list[StudySource]) -> None:
    """`store_results` files each answer with its study on its PACS: every source must come from one."""
    if not all(isinstance(s.location, DICOMwebSource) for s in sources):
        raise ValueError("storing results (--store-results) needs studies read from a PACS (--dicomweb URL): "
                         "studies read from disk have no server to file the SR with.")
    load_highdicom()


def run_settings(model: str | Path, settings: PredictSettings, precision: Precision) -> dict:
    """The settings a journal's rows depend on (not how fast they were computed); the precision as resolved, so
    that `auto` and the dtype it picked on this device are the same run."""
    return {"model": str(model), "findings": settings.findings, "estimates": settings.estimates,
            "prompt_set": settings.prompt_set, "score_unassessable": settings.score_unassessable,
            "expand_studies": settings.expand_studies, "dtype": precision.name, "report_model": settings.report_model,
            "split": settings.split, "store_results": settings.store_results}  # the montage adds no column


def start_journal(journal: Path, run: dict) -> None:
    """Create the journal, or check that the one there was written with the same settings (else its rows and the
    new ones would not make one table)."""
    journal.mkdir(parents=True, exist_ok=True)
    if (journal / RUN_FILE).is_file():
        earlier = json.loads((journal / RUN_FILE).read_text())
        changed = sorted(key for key in run if earlier.get(key) != run[key])
        if changed:
            raise ValueError(f"the output folder holds a predict run with other settings ({', '.join(changed)}); "
                             "rerun with the same model and settings to resume it, or pass a new --output-dir.")
        return
    write_json(journal / RUN_FILE, run)
    (journal / SALT_FILE).write_text(new_salt())


def _flush(buffer: list, predictor: Predictor, journal: Path, progress) -> None:
    """Score the buffered sources' studies together and append each source's rows to the journal."""
    studies = [s for *_, item in buffer for s in item["studies"]]
    answered = iter(predictor.answer(studies) if studies else [])
    for fingerprint, source, item in buffer:
        answers = [next(answered) for _ in item["studies"]]
        stored = [predictor.store(source, a) for a in answers] if predictor.settings.store_results else None
        rows = source_rows(item, answers, stored)
        append_jsonl(journal, {"source": fingerprint, "rows": rows}, where="the predict journal")
        progress.update(1)
    buffer.clear()


def store_answer(source: StudySource, answered: dict, montage_layout: StudyLayout | None = None) -> str:
    """File one answered study's SR (and, given the layout of the frames used, their montage) with its study on
    the PACS it was read from: `stored`, or `failed: <reason>` (the reason names no UID)."""
    draft = answered["draft"]
    try:
        montage = read_study(source.location) if montage_layout else None
        store_results(answered["answer"], source.location, draft["generated_impression"] if draft else None,
                      montage=montage, layout=montage_layout)
    except (CMRStudyError, ValueError) as error:
        return f"failed: {_reason(error, source)}"
    return "stored"


def read_journal(journal: Path) -> dict[str, list[dict]]:
    """source hash -> its rows, from every process's journal; a line cut short by an interruption is left out
    (that source is predicted again)."""
    finished = {}
    for path in sorted(journal.glob("rank-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            finished[entry["source"]] = entry["rows"]
    return finished


def write_table(sources: list[StudySource], salt: str, finished: dict, out: Path, save_embeddings: bool) -> dict:
    """`predictions.parquet` and `predictions.csv` (and the embeddings) from the journal, in source order."""
    entries = [entry for s in sources for entry in finished.get(hash_token(s.name, salt), [])]
    rows = [entry["row"] for entry in entries]
    for number, row in enumerate(rows, start=1):
        check_json(row, f"{TABLE} table", f"row {number}", local=True)
    columns = list(dict.fromkeys(["study", "status", "error", *(key for row in rows for key in row)]))
    table = Dataset.from_dict({column: [row.get(column) for row in rows] for column in columns})
    table.to_parquet(str(out / f"{TABLE}.parquet"))
    table.to_csv(str(out / f"{TABLE}.csv"), index=False)
    if save_embeddings:
        embeddings = {e["row"]["study"]: torch.tensor(e["embedding"]) for e in entries if "embedding" in e}
        save_file(embeddings, str(out / EMBEDDINGS_FILE))
    failed = sum(row["status"] == "error" for row in rows)
    return {"done": len(rows) - failed, "failed": failed, "table": str(out / f"{TABLE}.parquet")}
