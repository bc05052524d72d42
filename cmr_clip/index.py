"""`CMRStudyIndex`: case search over CMR-CLIP study embeddings, by text or by study.

    index = CMRStudyIndex.from_model("cmr-clip-demo")
    index.add_dataset(load_from_disk("corpus")["train"])          # or index.add_studies([...paths])
    index.search("severe LV dilation with transmural LGE", k=5)   # [{"rank", "study_id", "score"}, ...]
    index.search_by_study("new_study_dir", k=5)
    index.draft_report("new_study_dir")                           # impression of the nearest indexed study
    index.save("my-index"); CMRStudyIndex.load("my-index", model="cmr-clip-demo")

Embeddings are L2-normalised and scored by cosine. Search is exact (one matrix product) by default; the
`faiss` backend (`pip install cmr-clip[faiss]`) uses a FAISS inner-product index, exact unless another
`faiss_index` factory string (e.g. "HNSW32,Flat") is given. A saved index is `embeddings.safetensors`
plus `manifest.json` recording a fingerprint of the model's weights; loading it with another model is
refused, since its embeddings would live in a different space. Results carry study ids only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .embeddings import embed_split, encode_texts, encode_videos
from .modeling import CMRCLIPModel
from .privacy import safe_study_name, write_json
from .processing import CMRCLIPProcessor
from .processing.identity import read_identity

MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.safetensors"
FORMAT_VERSION = 1


class StudyIndexError(ValueError):
    """The index cannot do what was asked (empty, wrong shapes, not found)."""


class IndexModelMismatchError(StudyIndexError):
    """The index was built with a different model than the one it is used with."""


class IndexBackendError(StudyIndexError):
    """The requested search backend is unknown or not installed."""


def model_fingerprint(model) -> str:
    """sha256 over the model's config and every weight, in name order: equal only for the same weights."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim too
    return digest.hexdigest()


class CMRStudyIndex:
    def __init__(self, model, processor, backend: str = "exact", faiss_index: str = "Flat"):
        if backend not in ("exact", "faiss"):
            raise IndexBackendError(f"unknown backend {backend!r}; use 'exact' or 'faiss'.")
        if backend == "faiss":
            _import_faiss()
        self.model, self.processor = model.eval(), processor
        self.backend, self.faiss_index = backend, faiss_index
        self.fingerprint = model_fingerprint(model)
        self.embeddings = torch.zeros(0, model.config.projection_dim)
        self.study_ids: list[str] = []
        self.impressions: list[str | None] = []
        self._faiss = None

    @classmethod
    def from_model(cls, model_dir: str | Path, backend: str = "exact", faiss_index: str = "Flat") -> CMRStudyIndex:
        """An empty index bound to the CMR-CLIP model and processor saved in `model_dir`."""
        return cls(CMRCLIPModel.from_pretrained(model_dir), CMRCLIPProcessor.from_pretrained(model_dir), backend, faiss_index)

    def __len__(self) -> int:
        return len(self.study_ids)

    # -- adding ------------------------------------------------------------------------------------------------
    def add_embeddings(self, embeddings: torch.Tensor, study_ids: list[str], impressions: list[str | None] | None = None) -> None:
        embeddings = torch.as_tensor(embeddings).float()
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embeddings.shape[1]:
            raise StudyIndexError(f"embeddings must be (n, {self.embeddings.shape[1]}), got {tuple(embeddings.shape)}.")
        if len(study_ids) != len(embeddings) or (impressions is not None and len(impressions) != len(embeddings)):
            raise StudyIndexError(f"{len(embeddings)} embeddings but {len(study_ids)} study ids"
                              f"{'' if impressions is None else f' and {len(impressions)} impressions'}.")
        self.embeddings = torch.cat([self.embeddings, torch.nn.functional.normalize(embeddings, dim=-1)])
        self.study_ids += [str(i) for i in study_ids]
        self.impressions += list(impressions) if impressions is not None else [None] * len(study_ids)
        self._faiss = None

    def add_dataset(self, split, batch_size: int = 32, progress: bool = True) -> None:
        """Add every study of a prepared corpus split (ids and impressions from its columns)."""
        videos = embed_split(self.model, self.processor, split, batch_size=batch_size, progress=progress)["video"]
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
                self.add_embeddings(self._embed_pixels(batch["pixel_values_videos"]), [ids[i] for i in kept],
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
        return self._embed_pixels(pixels)

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
            scores, positions = self._faiss_index().search(np.ascontiguousarray(queries.numpy()), k)
            return torch.from_numpy(scores), torch.from_numpy(positions)
        # numpy's matrix product reads the stored embeddings faster than torch's on CPU (memory-bound).
        scores = torch.from_numpy(queries.numpy() @ self.embeddings.numpy().T)
        return scores.topk(k, dim=1)

    @torch.no_grad()
    def _embed_pixels(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        return encode_videos(self.model, pixel_values_videos.to(self.model.dtype))

    def _faiss_index(self):
        if self._faiss is None:
            faiss = _import_faiss()
            index = faiss.index_factory(self.embeddings.shape[1], self.faiss_index, faiss.METRIC_INNER_PRODUCT)
            vectors = np.ascontiguousarray(self.embeddings.numpy())
            if not index.is_trained:
                index.train(vectors)
            index.add(vectors)
            self._faiss = index
        return self._faiss

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {"format_version": FORMAT_VERSION, "model_fingerprint": self.fingerprint,
                    "model_name_or_path": str(self.model.name_or_path), "dim": self.embeddings.shape[1],
                    "count": len(self), "backend": self.backend, "faiss_index": self.faiss_index,
                    "study_ids": self.study_ids, "impressions": self.impressions}
        write_json(directory / MANIFEST, manifest, indent=None)  # the guard first: a refused index writes nothing
        save_file({"embeddings": self.embeddings.contiguous()}, str(directory / EMBEDDINGS))
        return directory

    @classmethod
    def load(cls, directory: str | Path, model=None, processor=None, backend: str | None = None) -> CMRStudyIndex:
        """Load a saved index with its model (a directory, or a loaded model plus processor; default: the
        directory recorded in the manifest). Raises `IndexModelMismatchError` for another model."""
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise StudyIndexError(f"{directory} holds no {MANIFEST}; build an index with `cmr-clip index build` first.")
        manifest = json.loads((directory / MANIFEST).read_text())
        source = model if model is not None else manifest["model_name_or_path"]
        if isinstance(source, (str, Path)):
            index = cls.from_model(source, backend or manifest["backend"], manifest["faiss_index"])
        else:
            index = cls(source, processor, backend or manifest["backend"], manifest["faiss_index"])
        if index.fingerprint != manifest["model_fingerprint"]:
            raise IndexModelMismatchError(
                f"the index in {directory} was built with another model (built with {manifest['model_name_or_path']}; "
                f"the weights given differ). Load it with that model, or rebuild it with `cmr-clip index build`.")
        index.add_embeddings(load_file(str(directory / EMBEDDINGS))["embeddings"], manifest["study_ids"], manifest["impressions"])
        return index


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise IndexBackendError("the faiss backend needs FAISS: pip install 'cmr-clip[faiss]' (faiss-cpu).") from error
    return faiss
