"""Build time, memory, text-query time and recall of a `CMRStudyIndex` over many study embeddings, on the CPU.

The index holds `--n` unit vectors of the model's projection size (512, the released model's shape) under a
random-weight CMR-CLIP (or `--model DIR`). By default they are clustered, as study embeddings are (studies
sharing findings lie near each other): `--clusters` random centres, each study its centre plus Gaussian noise
(cosine to the query's cluster about 0.75), and queries drawn the same way. `--data gaussian` gives structureless
random vectors, on which every approximate index scores a low recall (nearest neighbours there are noise).

Measured, each next to the old behaviour in the same run (ratio = old / new):
  - build: adding in batches of 64 (`--baseline-n` of them also the old way, one whole-matrix copy per batch),
    time and peak resident memory (sampled); the FAISS train+add time of each approximate index;
  - query: a text query end to end (tokenise, text tower, projection, top-k), median of `--repeats`, for exact
    float32 search (the old default), exact float16, and each `--approximate` FAISS index;
  - recall@k of each approximate index against exact search, over `--queries` queries;
  - save and memory-mapped load of the 1M index (old: the whole file read);
  - `--large-n` (10M) with IVF-PQ, its storage reserved up front, when its peak (estimated from the float16
    matrix, FAISS's codes, the training sample and the chunks) fits in 3/4 of the memory available; otherwise
    the memory it needs against the memory available. The figures before it are printed first. On that one
    build, each `--large-sweep` search setting (nprobe, rerank) is timed and its recall measured too.
`--json` writes the figures too.

    python benchmarks/index_search.py                                  # 100,000 embeddings
    python benchmarks/index_search.py --n 1000000 --large-n 10000000
"""

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertTokenizer

from cmr_clip import CMRCLIPConfig, CMRCLIPModel, CMRCLIPProcessor, CMRStudyProcessor
from cmr_clip.index import FAISS_ADD_CHUNK, FAISS_TRAIN_ROWS, CMRStudyIndex

QUERY = "severe lv dilation with transmural late gadolinium enhancement"
BATCH = 64
APPROXIMATE = ["IVF1024,Flat:nprobe=16", "IVF1024,PQ64,RFlat:nprobe=16,k_factor_rf=16", "IVF1024,PQ64:nprobe=16,rerank=16"]
LARGE = "IVF4096,PQ64:nprobe=32,rerank=16"
# Search parameters tried on the one large build (nprobe and rerank are search-time settings: no rebuild).
LARGE_SWEEP = ["nprobe=32,rerank=64", "nprobe=64,rerank=128", "nprobe=128,rerank=256"]


def random_model_dir(path: str, projection_dim: int) -> str:
    """A small random-weight CMR-CLIP with the given projection size, saved with a word-level tokenizer."""
    words = sorted(set(QUERY.split()))
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])})
    text = BertConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=256, num_hidden_layers=4,
                      num_attention_heads=4, intermediate_size=1024)
    config = CMRCLIPConfig(vision_config=dict(num_frames=8, image_size=32, patch_size=16, hidden_size=64,
                                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=128),
                           text_config=text.to_dict(), projection_dim=projection_dim)
    CMRCLIPModel(config).save_pretrained(path)
    CMRCLIPProcessor(tokenizer=tokenizer, feature_extractor=CMRStudyProcessor(num_frames=8, image_size=32)).save_pretrained(path)
    return path


class Embeddings:
    """Reproducible unit vectors, clustered or not, drawn in chunks (so that 10M never sit in memory as float64)."""

    def __init__(self, dim: int, clusters: int, kind: str, seed: int = 0):
        self.dim, self.kind, self.rng = dim, kind, np.random.default_rng(seed)
        self.centres = unit(self.rng.standard_normal((clusters, dim), dtype=np.float32))

    def draw(self, n: int) -> np.ndarray:
        noise = self.rng.standard_normal((n, self.dim), dtype=np.float32)
        if self.kind == "gaussian":
            return unit(noise)
        return unit(self.centres[self.rng.integers(0, len(self.centres), n)] + noise * (0.6 / np.sqrt(self.dim)))

    def chunks(self, n: int, size: int = 65536):
        for start in range(0, n, size):
            yield self.draw(min(size, n - start))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every 5 ms (covers numpy, torch and FAISS alike)."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.gib = (self.peak - self.start) / 2**30


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def available_bytes() -> int:
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable"))
    return int(line.split()[1]) * 1024


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def add_in_batches(index: CMRStudyIndex, vectors: np.ndarray, first_id: int = 0) -> None:
    for start in range(0, len(vectors), BATCH):
        rows = torch.from_numpy(vectors[start:start + BATCH])
        index.add_embeddings(rows, [f"S{first_id + start + i:08d}" for i in range(len(rows))])


def old_add_in_batches(dim: int, vectors: np.ndarray) -> torch.Tensor:
    """The old `add_embeddings`: the whole matrix copied by torch.cat on every batch."""
    matrix, ids = torch.zeros(0, dim), []
    for start in range(0, len(vectors), BATCH):
        rows = torch.from_numpy(vectors[start:start + BATCH])
        matrix = torch.cat([matrix, torch.nn.functional.normalize(rows, dim=-1)])
        ids += [f"S{start + i:08d}" for i in range(len(rows))]
    return matrix


def old_load(path: Path) -> torch.Tensor:
    """The old `load`'s work on the embeddings: the whole file read, normalised and copied into the index."""
    stored = load_file(str(path))["embeddings"].float()
    return torch.cat([torch.zeros(0, stored.shape[1]), torch.nn.functional.normalize(stored, dim=-1)])


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def build(model_dir: str, data: Embeddings, n: int, reserve: bool = False,
          **settings) -> tuple[CMRStudyIndex, float, float]:
    """An index of `n` drawn embeddings, added in batches of 64 (into storage reserved for all of them first with
    `reserve`): (index, seconds adding, peak GiB)."""
    index = CMRStudyIndex.from_model(model_dir, **settings)
    if reserve:
        index.reserve(n)
    seconds = 0.0
    with PeakMemory() as memory:
        for chunk in data.chunks(n):
            seconds += timed(lambda: add_in_batches(index, chunk, len(index)))[0]
    return index, seconds, memory.gib


def measure_build(model_dir: str, data: Embeddings, args) -> dict:
    vectors = data.draw(args.baseline_n)
    old = timed(lambda: old_add_in_batches(vectors.shape[1], vectors))[0]
    index = CMRStudyIndex.from_model(model_dir)
    new = timed(lambda: add_in_batches(index, vectors))[0]
    return {"baseline_n": args.baseline_n, "add_old_s": old, "add_new_s": new, "add_old_over_new": old / new}


def measure_queries(index: CMRStudyIndex, queries: torch.Tensor, args) -> dict:
    text_ms = 1000 * median_seconds(lambda: index.search(QUERY, k=args.k), args.repeats)
    search_ms = 1000 * median_seconds(lambda: index.top_k(queries[:1], args.k), args.repeats)
    return {"query_ms": text_ms, "search_ms": search_ms}


def measure_approximate(model_dir: str, stored: CMRStudyIndex, spec: str, queries: torch.Tensor, args) -> dict:
    factory, _, params = spec.partition(":")
    index = CMRStudyIndex(stored.model, stored.processor, "faiss", factory, params or None)
    index.add_embeddings(stored.embeddings, stored.study_ids)
    with PeakMemory() as memory:
        seconds = timed(lambda: index.top_k(queries[:1], args.k))[0]  # trains and fills the FAISS index
    return {"faiss_build_s": seconds, "faiss_build_peak_gib": memory.gib, **measure_queries(index, queries, args),
            f"recall@{args.k}": index.recall_against_exact(queries, args.k)}


def measure_persistence(index: CMRStudyIndex, args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        save_s = timed(lambda: index.save(tmp))[0]
        with PeakMemory() as memory:
            load_s, loaded = timed(lambda: CMRStudyIndex.load(tmp, model=index.model, processor=index.processor))
        first_query_s = timed(lambda: loaded.search(QUERY, k=args.k))[0]
        with PeakMemory() as old_memory:
            old_load_s = timed(lambda: old_load(Path(tmp) / "embeddings.safetensors"))[0]
    return {"save_s": save_s, "load_s": load_s, "load_peak_gib": memory.gib, "first_query_after_load_s": first_query_s,
            "old_load_embeddings_s": old_load_s, "old_load_peak_gib": old_memory.gib}


def measure_large(model_dir: str, data: Embeddings, queries: torch.Tensor, args) -> dict:
    """IVF-PQ over `--large-n` embeddings, stored as float16 (the exact matrix stays with the index), reserved up
    front. Run only when its peak fits in 3/4 of the memory available: the float16 matrix, FAISS's codes and ids
    (64 + 8 bytes a vector for PQ64), its float32 training sample, a float32 chunk being added and a batch drawn."""
    dim = data.dim
    n = args.large_n
    needed = (n * dim * 2 + n * (64 + 8) + min(n, FAISS_TRAIN_ROWS) * dim * 4 + FAISS_ADD_CHUNK * dim * 4
              + 2 * 65536 * dim * 8)
    figures = {"large_n": n, "large_needed_gib": needed / 2**30, "available_gib": available_bytes() / 2**30}
    if needed > 0.75 * available_bytes():
        figures["large_skipped"] = "needs more than 3/4 of the memory available on this machine"
        return figures
    factory, _, params = args.large_index.partition(":")
    index, add_s, add_gib = build(model_dir, data, n, reserve=True, backend="faiss", faiss_index=factory,
                                  faiss_params=params, dtype="float16")
    with PeakMemory() as memory:
        faiss_s = timed(lambda: index.top_k(queries[:1], args.k))[0]
    figures.update({"large_add_s": add_s, "large_add_peak_gib": add_gib, "large_faiss_build_s": faiss_s,
                    "large_faiss_peak_gib": memory.gib, **{f"large_{k}": v for k, v in measure_queries(index, queries, args).items()},
                    f"large_recall@{args.k}": index.recall_against_exact(queries[:50], args.k)})
    for params in args.large_sweep:
        index.faiss_params = params
        figures[f"large {params}"] = {**measure_queries(index, queries, args),
                                      f"recall@{args.k}": index.recall_against_exact(queries[:50], args.k)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="stored study embeddings")
    parser.add_argument("--baseline-n", type=int, default=50_000, help="embeddings added the old way too")
    parser.add_argument("--large-n", type=int, default=0, help="also build IVF-PQ over this many (e.g. 10000000)")
    parser.add_argument("--large-index", default=LARGE, help="FAISS factory[:params] for --large-n")
    parser.add_argument("--large-sweep", nargs="*", default=LARGE_SWEEP,
                        help="further FAISS search parameters measured on the --large-n build")
    parser.add_argument("--model", help="a CMR-CLIP directory (default: a random-weight model)")
    parser.add_argument("--projection-dim", type=int, default=512)
    parser.add_argument("--data", choices=["clustered", "gaussian"], default="clustered")
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--approximate", nargs="*", default=APPROXIMATE, help="FAISS factory[:params] strings")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200, help="queries for recall")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tmp-dir", help="where the index is saved and loaded (default: the system's)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or random_model_dir(tmp, args.projection_dim)
        dim = CMRCLIPConfig.from_pretrained(model_dir).projection_dim
        data = Embeddings(dim, args.clusters, args.data)
        queries = torch.from_numpy(data.draw(args.queries))
        results = {"n": args.n, "dim": dim, "k": args.k, "threads": args.threads, "data": args.data,
                   **measure_build(model_dir, data, args)}
        exact, add_s, add_gib = build(model_dir, data, args.n)
        results.update({"add_s": add_s, "add_peak_gib": add_gib, "exact_float32": measure_queries(exact, queries, args)})
        half = CMRStudyIndex(exact.model, exact.processor, dtype="float16")
        half.add_embeddings(exact.embeddings, exact.study_ids)
        results["exact_float16"] = measure_queries(half, queries, args)
        del half
        results["persistence"] = measure_persistence(exact, args)
        for spec in args.approximate:
            results[spec] = measure_approximate(model_dir, exact, spec, queries, args)
        baseline_ms = results["exact_float32"]["query_ms"]
        for key in ["exact_float16", *args.approximate]:
            results[key]["float32_over_this"] = baseline_ms / results[key]["query_ms"]
        del exact
        # The figures so far are printed (and written) before the large run, which can take most of the memory.
        print_figures(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        if args.large_n:
            results["large"] = measure_large(model_dir, data, queries, args)
            print_figures({"large": results["large"]})
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2))


def print_figures(results: dict, indent: str = "") -> None:
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            print_figures(value, indent + "  ")
        else:
            print(f"{indent}{key:>28}: {value:.3f}" if isinstance(value, float) else f"{indent}{key:>28}: {value}")


if __name__ == "__main__":
    main()
