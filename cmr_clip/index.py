"""`CMRStudyIndex`: case search over CMR-CLIP study embeddings, by text or by study.

    index = CMRStudyIndex.from_model("cmr-clip-demo")
    index.add_dataset(load_from_disk("corpus")["train"])          # or index.add_studies([...paths])
    index.search("severe LV dilation with transmural LGE", k=5)   # [{"rank", "study_id", "score"}, ...]
    index.search_by_study("new_study_dir", k=5)
    index.draft_report("new_study_dir")                           # impression of the nearest indexed study
    index.save("my-index"); CMRStudyIndex.load("my-index", model="cmr-clip-demo")
    CMRStudyIndex.from_model("cmr-clip-demo", backend="faiss", faiss_index="IVF1024,Flat", faiss_params="nprobe=16")
    CMRStudyIndex.from_model("cmr-clip-demo", model_dtype="bfloat16", quantize="int8")   # inference precision
    CMRStudyIndex.from_model("cmr-clip-demo", quantize="int8", compile=True)              # for large builds

Embeddings are L2-normalised and scored by cosine, stored as float32 or float16 (`dtype`; float16 halves
the memory and the time of exact search). Adding grows the matrix geometrically, so building is amortised
linear; `index.reserve(n)` first allocates room for n at once, so that a large build holds the embeddings
once rather than old and new storage side by side. A FAISS index trains on at most `FAISS_TRAIN_ROWS`
stored embeddings and takes them in chunks, never as one float32 copy. Search is exact (one matrix product) by default; the `faiss` backend (`pip install cmr-clip[faiss]`)
uses a FAISS inner-product index built from the `faiss_index` factory string: "Flat" (exact, the default),
or an approximate one such as "HNSW32,Flat" or "IVF1024,PQ64" with `faiss_params` such as "efSearch=128"
or "nprobe=32", and "rerank=N" to re-rank N x k FAISS candidates by exact cosine against the stored
embeddings (what makes IVF-PQ usable: see `split_faiss_params`); `recall_against_exact` measures how many of
the exact top-k an approximate index finds.
The model embeds in the precision `model_dtype`, `quantize` and `compile` set (`cmr_clip.precision`; "auto" by
default, `index.precision` says what was picked); the stored embeddings are float32 or float16 (`dtype`) whatever it
is, and the model's fingerprint is that of its weights before any conversion (`precision.model_fingerprint`),
so an index built in bfloat16 loads with the float32 model, with one a pipeline already runs in bfloat16 or int8,
and the other way round.

A saved index is a folder (format 2):
  embeddings.safetensors  the (n, dim) matrix, memory-mapped on load (nothing is read until searched)
  manifest.parquet        the columns study_id and impression, one row per embedding
  manifest.json           format version, a fingerprint of the model's weights, dtype and FAISS settings
  index.faiss             the FAISS index of a `faiss` backend, reused on load unless missing or stale
Loading with another model is refused, since its embeddings would live in a different space. Format 1
(ids and impressions inside manifest.json) still loads. Every file is checked by the privacy guard before
anything is written. Results carry study ids only.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from .embeddings import embed_split, encode_texts, encode_videos
from .modeling import CMRCLIPModel
from .precision import SOURCE_FINGERPRINTS, model_fingerprint, set_precision
from .privacy import check_json, safe_study_name, write_json
from .processing import CMRCLIPProcessor
from .processing.identity import read_identity

MANIFEST = "manifest.json"
TABLE = "manifest.parquet"
EMBEDDINGS = "embeddings.safetensors"
FAISS_FILE = "index.faiss"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
DTYPES = {"float32": (np.float32, "F32"), "float16": (np.float16, "F16")}
MIN_CAPACITY = 1024
FAISS_TRAIN_ROWS = 1 << 20
"""At most this many stored embeddings, drawn at random, train a FAISS index (k-means and PQ use a sample
anyway: FAISS itself keeps 256 points per centroid). With the rows added in chunks, building never holds a
float32 copy of the whole matrix."""
FAISS_ADD_CHUNK = 65536


class StudyIndexError(ValueError):
    """The index cannot do what was asked (empty, wrong shapes, not found)."""


class IndexModelMismatchError(StudyIndexError):
    """The index was built with a different model than the one it is used with."""


class IndexBackendError(StudyIndexError):
    """The requested search backend is unknown or not installed."""


def split_faiss_params(params: str | None) -> tuple[str | None, int]:
    """(FAISS's own parameters, our `rerank=N`) from a `faiss_params` string such as "nprobe=32,rerank=16":
    with rerank=N, FAISS proposes N x k candidates and the exact cosine against the stored embeddings (already
    held for exact search and `recall_against_exact`) picks the k, as FAISS's `RFlat` refinement does without
    a second copy of the vectors. 1 (the default) keeps FAISS's own ranking."""
    if not params:
        return params, 1
    kept, rerank = [], 1
    for item in (part.strip() for part in params.split(",")):
        name, _, value = item.partition("=")
        if name.strip() != "rerank":
            kept.append(item)
            continue
        try:
            rerank = int(value)
        except ValueError:
            rerank = 0
        if rerank < 1:
            raise IndexBackendError(f"faiss_params {params!r}: rerank must be a whole number of candidates per result "
                                    f"(1 or more), got {value!r}.")
    return ",".join(kept) or None, rerank


def training_sample(matrix: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """`matrix` as float32 if it has at most `rows` rows, else `rows` of its rows drawn at random (seeded, in
    storage order, so that a memory-mapped matrix is read front to back)."""
    if len(matrix) <= rows:
        return np.ascontiguousarray(matrix, dtype=np.float32)
    chosen = np.sort(np.random.default_rng(seed).choice(len(matrix), rows, replace=False))
    return np.ascontiguousarray(matrix[chosen], dtype=np.float32)


def save_matrix(path: Path, matrix: np.ndarray) -> None:
    """`matrix` as a safetensors file holding one tensor, "embeddings", streamed from memory (no copy). Written
    beside and then renamed over `path`, so that an index memory-mapped from `path` keeps reading its old file."""
    code = DTYPES[matrix.dtype.name][1]
    header = json.dumps({"embeddings": {"dtype": code, "shape": list(matrix.shape), "data_offsets": [0, matrix.nbytes]}})
    header += " " * (-len(header) % 8)  # the data starts 8-byte aligned
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header.encode())
        for start in range(0, len(matrix), 16384):
            handle.write(np.ascontiguousarray(matrix[start:start + 16384], dtype=matrix.dtype.newbyteorder("<")).tobytes())
    os.replace(partial, path)


def open_matrix(path: Path) -> np.ndarray:
    """The "embeddings" tensor of a safetensors file, memory-mapped copy-on-write: pages are read when searched."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        entry = json.loads(handle.read(length))["embeddings"]
    dtype = next((np.dtype(dt).newbyteorder("<") for dt, code in DTYPES.values() if code == entry["dtype"]), None)
    if dtype is None:
        raise StudyIndexError(f"{path}: embeddings stored as {entry['dtype']}; an index stores F32 or F16. "
                              "Rebuild it with `cmr-clip index build`.")
    if entry["shape"][0] == 0:
        return np.zeros(entry["shape"], dtype)
    return np.memmap(path, dtype=dtype, mode="c", offset=8 + length + entry["data_offsets"][0], shape=tuple(entry["shape"]))


class CMRStudyIndex:
    def __init__(self, model, processor, backend: str = "exact", faiss_index: str = "Flat",
                 faiss_params: str | None = None, dtype: str = "float32", model_dtype: str | torch.dtype = "auto",
                 quantize: str | None = None, compile: bool = False):
        if backend not in ("exact", "faiss"):
            raise IndexBackendError(f"unknown backend {backend!r}; use 'exact' or 'faiss'.")
        if dtype not in DTYPES:
            raise StudyIndexError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}.")
        if backend == "faiss":
            _import_faiss()
        self.model, self.processor = model.eval(), processor
        self.backend, self.faiss_index, self.faiss_params = backend, faiss_index, faiss_params
        self.fingerprint = model_fingerprint(model)
        self.precision = set_precision(self.model, model_dtype, quantize, compile)
        # Rows [0, len) hold the embeddings; the rest is spare capacity, grown geometrically (amortised linear adds).
        self._matrix = np.zeros((0, model.config.projection_dim), DTYPES[dtype][0])
        self.study_ids: list[str] = []
        self.impressions: list[str | None] = []
        self._faiss = None

    @property
    def faiss_params(self) -> str | None:
        return self._faiss_params

    @faiss_params.setter
    def faiss_params(self, value: str | None) -> None:
        # Parsed (and checked) when set, not at every search: FAISS's own part and our rerank factor. A FAISS index
        # already built takes the new search parameters at once (no rebuild: nprobe and efSearch are search-time).
        previous = getattr(self, "_faiss_params", None)
        self._faiss_own_params, self._rerank_factor = split_faiss_params(value)
        self._faiss_params = value
        if getattr(self, "_faiss", None) is not None:
            try:
                self._with_params(self._faiss)
            except IndexBackendError:  # parameters that do not apply leave the index as it was
                self.faiss_params = previous
                raise

    @classmethod
    def from_model(cls, model_dir: str | Path, backend: str = "exact", faiss_index: str = "Flat",
                   faiss_params: str | None = None, dtype: str = "float32", model_dtype: str | torch.dtype = "auto",
                   quantize: str | None = None, compile: bool = False) -> CMRStudyIndex:
        """An empty index bound to the CMR-CLIP model and processor saved in `model_dir`, the model run in the
        precision `model_dtype`, `quantize` and `compile` set."""
        return cls(CMRCLIPModel.from_pretrained(model_dir), CMRCLIPProcessor.from_pretrained(model_dir), backend,
                   faiss_index, faiss_params, dtype, model_dtype, quantize, compile)

    def __len__(self) -> int:
        return len(self.study_ids)

    @property
    def dtype(self) -> str:
        return self._matrix.dtype.name

    @property
    def embeddings(self) -> torch.Tensor:
        """The stored embeddings (n, dim), a view of the index's storage (memory-mapped after `load`)."""
        return torch.from_numpy(self._matrix[:len(self)])

    # -- adding ------------------------------------------------------------------------------------------------
    def add_embeddings(self, embeddings: torch.Tensor, study_ids: list[str], impressions: list[str | None] | None = None) -> None:
        embeddings = torch.as_tensor(embeddings).float()
        dim = self._matrix.shape[1]
        if embeddings.dim() != 2 or embeddings.shape[1] != dim:
            raise StudyIndexError(f"embeddings must be (n, {dim}), got {tuple(embeddings.shape)}.")
        if len(study_ids) != len(embeddings) or (impressions is not None and len(impressions) != len(embeddings)):
            raise StudyIndexError(f"{len(embeddings)} embeddings but {len(study_ids)} study ids"
                              f"{'' if impressions is None else f' and {len(impressions)} impressions'}.")
        rows = torch.nn.functional.normalize(embeddings, dim=-1).numpy()
        count = len(self)
        self._reserve(count + len(rows))
        self._matrix[count:count + len(rows)] = rows
        self.study_ids += [str(i) for i in study_ids]
        self.impressions += list(impressions) if impressions is not None else [None] * len(study_ids)
        if self._faiss is not None:
            self._faiss.add(np.ascontiguousarray(self._matrix[count:len(self)], dtype=np.float32))

    def reserve(self, total: int) -> None:
        """Room for `total` embeddings in all, allocated now: adding up to that many copies nothing more. Adding
        grows the storage geometrically (amortised linear), which at the moment it grows holds the old and the
        new storage, up to three times the embeddings; reserving first keeps the peak at the embeddings (10M x
        512 in float16: 10 GiB, not up to 26 GiB)."""
        self._reserve(total, exact=True)

    def _reserve(self, rows: int, exact: bool = False) -> None:
        """Room for `rows` embeddings in writable memory: a loaded (memory-mapped) matrix is copied on first add."""
        if rows <= len(self._matrix) and not isinstance(self._matrix, np.memmap):
            return
        capacity = max(rows, len(self)) if exact else max(rows, 2 * len(self._matrix), MIN_CAPACITY)
        grown = np.empty((capacity, self._matrix.shape[1]), self._matrix.dtype)
        grown[:len(self)] = self._matrix[:len(self)]
        self._matrix = grown

    def add_dataset(self, split, batch_size: int = 32, progress: bool = True) -> None:
        """Add every study of a prepared corpus split (ids and impressions from its columns)."""
        videos = embed_split(self.model, self.processor, split, batch_size=batch_size, progress=progress)["video"]
        self.reserve(len(self) + len(videos))
        self.add_embeddings(videos, list(split["study_id"]), list(split["impression"]))

    def add_studies(self, paths: list[str | Path], study_ids: list[str] | None = None, batch_size: int = 8,
                    progress: bool = True, impressions: list[str] | None = None) -> list[dict]:
        """Add DICOM studies (folders or zips), `batch_size` at a time; a study that cannot be read is skipped and
        reported in the returned list (id, error). Study ids default to the folder names, or `study N` where a
        name looks like an identifier (`cmr_clip.privacy.safe_study_name`)."""
        paths = [Path(p) for p in paths]
        ids = list(study_ids) if study_ids is not None else [safe_study_name(p.name, i, read_identity(p) if p.exists() else None)
                                                             for i, p in enumerate(paths)]
        skipped = []
        for start in tqdm(range(0, len(paths), batch_size), desc="indexing studies", disable=not progress):
            chunk = slice(start, start + batch_size)
            batch = self.processor.feature_extractor([str(p) for p in paths[chunk]], skip_errors=True)
            kept = [start + meta["index"] for meta in batch["study_metadata"]]
            skipped += [{"study_id": ids[start + e["index"]], "error": e["error"], "message": e["message"]} for e in batch["errors"]]
            if kept:
                self.add_embeddings(encode_videos(self.model, batch["pixel_values_videos"]), [ids[i] for i in kept],
                                    [impressions[i] for i in kept] if impressions is not None else None)
        return skipped

    # -- searching ---------------------------------------------------------------------------------------------
    def search(self, query, k: int = 10) -> list[dict] | list[list[dict]]:
        """Top-k indexed studies for a text, a list of texts, or query embeddings (D,) or (n, D).
        Each hit is {"rank", "study_id", "score"} with the cosine similarity as score; a list of queries
        gives a list of hit lists."""
        if isinstance(query, str):
            return self._hits(encode_texts(self.model, self.processor.tokenizer, [query]), k)[0]
        if isinstance(query, (list, tuple)) and all(isinstance(q, str) for q in query):
            return self._hits(encode_texts(self.model, self.processor.tokenizer, list(query)), k)
        if isinstance(query, torch.Tensor):
            hits = self._hits(query.reshape(1, -1) if query.dim() == 1 else query, k)
            return hits[0] if query.dim() == 1 else hits
        raise TypeError(f"search takes a text, a list of texts or an embedding tensor, got {type(query).__name__}; "
                        "for a study use search_by_study.")

    def search_by_study(self, study, k: int = 10) -> list[dict]:
        """Top-k indexed studies most similar to a study (a path, or `pixel_values_videos` (T, 3, H, W))."""
        return self._hits(self._study_embedding(study), k)[0]

    def draft_report(self, study, k: int = 1) -> list[dict]:
        """Retrieval baseline for report drafting: the impressions of the k nearest indexed studies."""
        return self._hits(self._study_embedding(study), k, with_impression=True)[0]

    def _study_embedding(self, study) -> torch.Tensor:
        if isinstance(study, torch.Tensor):
            pixels = study if study.dim() == 5 else study.unsqueeze(0)
        else:
            pixels = self.processor.feature_extractor(str(study))["pixel_values_videos"]
        return encode_videos(self.model, pixels)

    def _hits(self, queries: torch.Tensor, k: int, with_impression: bool = False) -> list[list[dict]]:
        scores, positions = self.top_k(queries, k)
        hits = []
        for row_scores, row_positions in zip(scores.tolist(), positions.tolist()):
            row = [{"rank": r + 1, "study_id": self.study_ids[p], "score": s}
                   for r, (s, p) in enumerate(zip(row_scores, row_positions))]
            if with_impression:
                row = [{**hit, "impression": self.impressions[p]} for hit, p in zip(row, row_positions)]
            hits.append(row)
        return hits

    def top_k(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, positions), each (n, min(k, len)), best first."""
        if len(self) == 0:
            raise StudyIndexError("the index is empty; add studies first (add_studies, add_dataset or add_embeddings).")
        k = min(k, len(self))
        queries = torch.nn.functional.normalize(queries.float(), dim=-1)
        if self.backend == "faiss":
            candidates = min(k * self._rerank_factor, len(self))
            scores, positions = self._faiss_index().search(np.ascontiguousarray(queries.numpy()), candidates)
            if self._rerank_factor > 1:
                return self._rerank(queries, torch.from_numpy(positions), k)
            return torch.from_numpy(scores), torch.from_numpy(positions)
        return self.exact_top_k(queries, k)

    def _rerank(self, queries: torch.Tensor, positions: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The best k of each query's candidate `positions` by exact cosine against the stored embeddings (the
        rows are read from the matrix, memory-mapped or not); -1 (no candidate) ranks last."""
        rows = torch.from_numpy(np.ascontiguousarray(self._matrix[positions.clamp(min=0).numpy()], dtype=np.float32))
        exact = torch.einsum("qcd,qd->qc", rows, queries).masked_fill(positions < 0, float("-inf"))
        scores, order = exact.topk(k, dim=1)
        return scores, positions.gather(1, order)

    def exact_top_k(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact search over the stored embeddings for normalised `queries`, whatever the backend."""
        stored = self._matrix[:len(self)]
        if stored.dtype == np.float16:  # torch has a float16 CPU matrix product; numpy has none
            scores = (torch.from_numpy(stored) @ queries.half().T).T.float()
        else:  # numpy's matrix product reads the stored embeddings faster than torch's on CPU (memory-bound)
            scores = torch.from_numpy(queries.numpy() @ stored.T)
        return scores.topk(min(k, len(self)), dim=1)

    def recall_against_exact(self, queries: torch.Tensor, k: int = 10) -> float:
        """Mean share of each query's exact top-k that this index's search returns (1.0 for exact search)."""
        queries = torch.nn.functional.normalize(torch.as_tensor(queries).float().reshape(-1, self._matrix.shape[1]), dim=-1)
        found, expected = self.top_k(queries, k)[1].tolist(), self.exact_top_k(queries, k)[1].tolist()
        return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, expected)]))

    def _faiss_index(self):
        if self._faiss is None:
            faiss = _import_faiss()
            index = faiss.index_factory(self._matrix.shape[1], self.faiss_index, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(training_sample(self._matrix[:len(self)], FAISS_TRAIN_ROWS))
            for start in range(0, len(self), FAISS_ADD_CHUNK):
                index.add(np.ascontiguousarray(self._matrix[start:min(start + FAISS_ADD_CHUNK, len(self))], dtype=np.float32))
            self._faiss = self._with_params(index)
        return self._faiss

    def _with_params(self, index):
        if self._faiss_own_params:
            try:
                _import_faiss().ParameterSpace().set_index_parameters(index, self._faiss_own_params)
            except RuntimeError as error:
                raise IndexBackendError(f"faiss_params {self.faiss_params!r} do not apply to a {self.faiss_index!r} index "
                                        "(efSearch=N for HNSW, nprobe=N for IVF); change or drop them.") from error
        return index

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the index to `directory` (format 2, see the module docstring); the guard checks the study ids,
        impressions and manifest before anything is written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        rows = {"study_id": self.study_ids, "impression": self.impressions}
        check_json(rows, TABLE, local=True)
        manifest = {"format_version": FORMAT_VERSION, "model_fingerprint": self.fingerprint,
                    "model_name_or_path": str(self.model.name_or_path), "dim": self._matrix.shape[1],
                    "count": len(self), "dtype": self.dtype, "backend": self.backend, "faiss_index": self.faiss_index,
                    "faiss_params": self.faiss_params,
                    "faiss": {"factory": self.faiss_index, "count": len(self)} if self.backend == "faiss" else None}
        write_json(directory / MANIFEST, manifest)
        pq.write_table(pa.table({name: pa.array(values, pa.string()) for name, values in rows.items()}), directory / TABLE)
        save_matrix(directory / EMBEDDINGS, self._matrix[:len(self)])
        if self.backend == "faiss":
            _import_faiss().write_index(self._faiss_index(), str(directory / FAISS_FILE))
        else:
            (directory / FAISS_FILE).unlink(missing_ok=True)  # it would describe older contents
        return directory

    @classmethod
    def load(cls, directory: str | Path, model=None, processor=None, backend: str | None = None,
             faiss_index: str | None = None, faiss_params: str | None = None, model_dtype: str | torch.dtype = "auto",
             quantize: str | None = None, compile: bool = False) -> CMRStudyIndex:
        """Load a saved index with its model (a directory, or a loaded model plus processor; default: the
        directory recorded in the manifest), run in the precision `model_dtype`, `quantize` and `compile` set. The
        embeddings stay on disk, memory-mapped; a saved FAISS index is reused when it was built with the same
        factory string over the same rows. Raises `IndexModelMismatchError` for another model."""
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise StudyIndexError(f"{directory} holds no {MANIFEST}; build an index with `cmr-clip index build` first.")
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("format_version") not in READABLE_FORMATS:
            raise StudyIndexError(f"{directory / MANIFEST}: index format {manifest.get('format_version')!r}; this "
                                  f"cmr-clip reads formats {READABLE_FORMATS}. Rebuild it with `cmr-clip index build`.")
        source = model if model is not None else manifest["model_name_or_path"]
        factory = faiss_index or manifest["faiss_index"]
        saved_params = manifest.get("faiss_params") if factory == manifest["faiss_index"] else None  # they fit that factory
        settings = (backend or manifest["backend"], factory, faiss_params if faiss_params is not None else saved_params,
                    manifest.get("dtype", "float32"), model_dtype, quantize, compile)
        index = cls.from_model(source, *settings) if isinstance(source, (str, Path)) else cls(source, processor, *settings)
        saved = manifest["model_fingerprint"]
        if index.fingerprint != saved and model_fingerprint(index.model, with_folder=True) != saved:
            loaded_in = next(index.model.parameters()).dtype
            hint = ("" if loaded_in == torch.float32 or hasattr(index.model, SOURCE_FINGERPRINTS) else
                    f" The model given was loaded in {str(loaded_in).removeprefix('torch.')}, so its weights are not "
                    "the float32 ones the index knows: pass its folder instead, or load it in float32 and let "
                    "`model_dtype=` (a pipeline's `dtype=\"auto\"`) convert it.")
            raise IndexModelMismatchError(
                f"the index in {directory} was built with another model (built with {manifest['model_name_or_path']}; "
                f"the weights given differ). Load it with that model, or rebuild it with `cmr-clip index build`.{hint}")
        index.study_ids, index.impressions = _read_rows(directory, manifest)
        index._matrix = open_matrix(directory / EMBEDDINGS)
        if len(index._matrix) != len(index.study_ids):
            raise StudyIndexError(f"{directory}: {EMBEDDINGS} holds {len(index._matrix)} embeddings but the manifest "
                                  f"{len(index.study_ids)} studies; rebuild it with `cmr-clip index build`.")
        index._faiss = index._saved_faiss(directory / FAISS_FILE, manifest.get("faiss"))
        return index

    def _saved_faiss(self, path: Path, record: dict | None):
        """The FAISS index saved at `path` if it matches this index's backend, factory string and rows; else None
        (built again on the first search)."""
        if self.backend != "faiss" or not path.is_file() or record != {"factory": self.faiss_index, "count": len(self)}:
            return None
        saved = _import_faiss().read_index(str(path))
        return self._with_params(saved) if saved.ntotal == len(self) else None


def _read_rows(directory: Path, manifest: dict) -> tuple[list[str], list[str | None]]:
    """Study ids and impressions: the Parquet columns (format 2) or the lists inside manifest.json (format 1)."""
    if manifest["format_version"] == 1:
        return [str(i) for i in manifest["study_ids"]], list(manifest["impressions"])
    table = pq.read_table(directory / TABLE, memory_map=True)
    return table.column("study_id").to_pylist(), table.column("impression").to_pylist()


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise IndexBackendError("the faiss backend needs FAISS: pip install 'cmr-clip[faiss]' (faiss-cpu).") from error
    return faiss
