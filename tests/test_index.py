"""CMRStudyIndex: the same top-k as brute force (exact and FAISS), save/load, refusal of another model,
studies and prepared corpora added, search by study and report drafting, CLI, and text-query speed at 100k."""

import json
import time

import numpy as np
import pytest
import torch
from test_zero_shot_support import save_random_model, tiny_corpus

from cmr_clip.index import CMRStudyIndex, IndexModelMismatchError, StudyIndexError
from cmr_clip.synthetic import make_cohort

DIM = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def empty_index(model_dir):
    return CMRStudyIndex.from_model(model_dir)


def random_index(model_dir, n, backend="exact", seed=0):
    index = CMRStudyIndex.from_model(model_dir, backend=backend)
    generator = torch.Generator().manual_seed(seed)
    index.add_embeddings(torch.randn(n, DIM, generator=generator), [f"S{i:06d}" for i in range(n)])
    return index


def brute_force(index, queries, k):
    data = index.embeddings.numpy()
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    return np.argsort(-(q @ data.T), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_top_k_equals_brute_force(model_dir, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    index = random_index(model_dir, 500, backend=backend)
    queries = torch.randn(7, DIM, generator=torch.Generator().manual_seed(1))
    hits = index.search(queries, k=10)
    expected = brute_force(index, queries, 10)
    for row, positions in zip(hits, expected):
        assert [h["study_id"] for h in row] == [index.study_ids[p] for p in positions]
        assert [h["rank"] for h in row] == list(range(1, 11))
        assert all(a["score"] >= b["score"] for a, b in zip(row, row[1:]))


def test_save_load_roundtrip_and_mismatched_model_is_refused(model_dir, tmp_path):
    index = random_index(model_dir, 50)
    index.save(tmp_path / "idx")
    loaded = CMRStudyIndex.load(tmp_path / "idx")
    query = torch.randn(DIM)
    before, after = index.search(query, k=5), loaded.search(query, k=5)
    assert [h["study_id"] for h in after] == [h["study_id"] for h in before]
    assert [h["score"] for h in after] == pytest.approx([h["score"] for h in before], abs=1e-6)
    torch.testing.assert_close(loaded.embeddings, index.embeddings)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["count"] == 50 and manifest["model_fingerprint"] == index.fingerprint
    other = save_random_model(tmp_path / "other_model", seed=1)
    with pytest.raises(IndexModelMismatchError, match="another model"):
        CMRStudyIndex.load(tmp_path / "idx", model=other)
    with pytest.raises(StudyIndexError, match="cmr-clip index build"):
        CMRStudyIndex.load(tmp_path / "nothing")


def test_text_query_over_100k_embeddings_is_fast(model_dir):
    index = random_index(model_dir, 100_000)
    index.search("severe lv dilation with transmural lge", k=10)  # warm-up
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        hits = index.search("severe lv dilation with transmural lge", k=10)
        timings.append(time.perf_counter() - start)
    assert len(hits) == 10
    assert min(timings) < 0.5, timings


def test_studies_added_searched_by_study_and_drafted(model_dir, tmp_path):
    make_cohort(tmp_path / "cohort", 2, seed=2, progress=False, num_workers=1)
    studies = sorted((tmp_path / "cohort" / "studies").iterdir())
    index = CMRStudyIndex.from_model(model_dir)
    skipped = index.add_studies([*studies, tmp_path / "missing_study"], batch_size=2, progress=False,
                                impressions=["first impression", "second impression", "never"])
    assert index.study_ids == [s.name for s in studies]
    assert [s["study_id"] for s in skipped] == ["missing_study"]
    hit = index.search_by_study(studies[1], k=1)[0]
    assert hit["study_id"] == studies[1].name and hit["score"] == pytest.approx(1.0, abs=1e-5)
    assert index.draft_report(studies[0])[0]["impression"] == "first impression"
    assert str(tmp_path) not in json.dumps(index.search("lge", k=2))


def test_dataset_added_with_ids_and_impressions(model_dir):
    corpus = tiny_corpus(4)
    index = CMRStudyIndex.from_model(model_dir)
    index.add_dataset(corpus["train"], batch_size=3, progress=False)
    index.add_dataset(corpus["test"], batch_size=3, progress=False)
    assert index.study_ids == list(corpus["train"]["study_id"]) + list(corpus["test"]["study_id"])
    assert index.impressions[:4] == list(corpus["train"]["impression"])
    with pytest.raises(StudyIndexError, match="embeddings must be"):
        index.add_embeddings(torch.randn(2, DIM + 1), ["a", "b"])


def test_empty_index_and_wrong_queries_are_reported(empty_index):
    with pytest.raises(StudyIndexError, match="empty"):
        empty_index.search(torch.randn(DIM))
    with pytest.raises(TypeError, match="search_by_study"):
        empty_index.search(42)


def test_cli_builds_appends_and_searches(model_dir, tmp_path, capsys):
    from cmr_clip.cli import main

    corpus = tiny_corpus(4)
    corpus.save_to_disk(str(tmp_path / "corpus"))
    out = tmp_path / "index"
    assert main(["index", "build", "--model", str(model_dir), "--data", str(tmp_path / "corpus"), "--out", str(out)]) == 0
    assert main(["index", "build", "--model", str(model_dir), "--data", str(tmp_path / "corpus"), "--split", "test",
                 "--out", str(out), "--append"]) == 0
    assert len(CMRStudyIndex.load(out)) == 8
    capsys.readouterr()
    assert main(["search", "dilated lv", "--index", str(out), "-k", "3", "--impressions", "--json",
                 str(tmp_path / "hits.json")]) == 0
    printed = capsys.readouterr().out
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert len(hits) == 3 and all(h["study_id"] in printed for h in hits) and hits[0]["impression"]


@pytest.mark.slow
def test_benchmark_script_runs_and_agrees(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "index_search.py"
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(script), "--n", "2000", "--projection-dim", "32", "--repeats", "2",
                             "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["n"] == 2000 and figures["query_ms"] > 0 and figures["baseline_over_exact"] > 0


def test_fingerprint_covers_a_learnable_logit_scale():
    """A 0-dim parameter (the learnable logit scale of the demo model) is part of the fingerprint."""
    from test_zero_shot_support import tiny_config

    from cmr_clip import CMRCLIPModel
    from cmr_clip.index import model_fingerprint

    config = tiny_config()
    config.learnable_logit_scale = True
    model = CMRCLIPModel(config)
    before = model_fingerprint(model)
    with torch.no_grad():
        model.logit_scale += 0.5
    assert model_fingerprint(model) != before
