"""Speed of a text query against a `CMRStudyIndex` of many stored study embeddings, on the CPU.

The index holds `--n` random unit vectors of the model's projection size (512 for the released model's
shape, the default here) under a random-weight CMR-CLIP (or `--model DIR`). Measured, as medians of
`--repeats` runs after three warm-up runs:
  - query: a text query end to end (tokenise, text tower, projection, exact top-k), as a user calls it;
  - search: the top-k step alone for a ready query embedding, exact (one matrix product + topk);
  - baseline: the same search written plainly, numpy scores then a full argsort;
  - faiss: the top-k step with the FAISS backend (exact inner-product index), when faiss is installed.
Printed as milliseconds and ratios (baseline / exact, exact / faiss); `--json` writes them too. The top-k
of all three agree (checked on every run).

    python benchmarks/index_search.py                 # 100,000 embeddings
    python benchmarks/index_search.py --n 1000000 --model cmr-clip-demo
"""

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import BertConfig, BertTokenizer

from cmr_clip import CMRCLIPConfig, CMRCLIPModel, CMRCLIPProcessor, CMRStudyProcessor
from cmr_clip.index import CMRStudyIndex, IndexBackendError

QUERY = "severe lv dilation with transmural late gadolinium enhancement"


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


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def numpy_baseline(embeddings: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(embeddings @ query))[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="stored study embeddings")
    parser.add_argument("--model", help="a CMR-CLIP directory (default: a random-weight model)")
    parser.add_argument("--projection-dim", type=int, default=512)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        index = CMRStudyIndex.from_model(args.model or random_model_dir(tmp, args.projection_dim))
    dim = index.embeddings.shape[1]
    index.add_embeddings(torch.randn(args.n, dim), [f"S{i:07d}" for i in range(args.n)])
    query = torch.nn.functional.normalize(torch.randn(1, dim), dim=-1)
    stored = index.embeddings.numpy()

    results = {"n": args.n, "dim": dim, "k": args.k, "threads": torch.get_num_threads()}
    results["query_ms"] = 1000 * median_seconds(lambda: index.search(QUERY, k=args.k), args.repeats)
    results["search_exact_ms"] = 1000 * median_seconds(lambda: index.top_k(query, args.k), args.repeats)
    results["baseline_numpy_argsort_ms"] = 1000 * median_seconds(lambda: numpy_baseline(stored, query[0].numpy(), args.k),
                                                                 args.repeats)
    exact = index.top_k(query, args.k)[1][0].tolist()
    if exact != numpy_baseline(stored, query[0].numpy(), args.k).tolist():
        raise SystemExit("exact search and the numpy baseline disagree")
    results["baseline_over_exact"] = results["baseline_numpy_argsort_ms"] / results["search_exact_ms"]
    try:
        index.backend = "faiss"
        index.top_k(query, args.k)  # builds the FAISS index outside the timing
        results["search_faiss_ms"] = 1000 * median_seconds(lambda: index.top_k(query, args.k), args.repeats)
        if index.top_k(query, args.k)[1][0].tolist() != exact:
            raise SystemExit("FAISS and exact search disagree")
        results["exact_over_faiss"] = results["search_exact_ms"] / results["search_faiss_ms"]
    except IndexBackendError:
        results["search_faiss_ms"] = None
    for key, value in results.items():
        print(f"{key:>28}: {value:.3f}" if isinstance(value, float) else f"{key:>28}: {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
