"""CMRStudyIndex: the same top-k as brute force (exact, float16 and FAISS), save/load round trips (memory-mapped
safetensors, Parquet manifest, FAISS index reused unless stale, format 1 still read), refusal of another model
and of an identifier, adding in linear time, recall of approximate FAISS indexes, studies and prepared corpora
added, search by study and report drafting, CLI, and text-query speed at 100k."""

import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file
from test_zero_shot_support import save_random_model, tiny_corpus

from cmr_clip.index import CMRStudyIndex, IndexBackendError, IndexModelMismatchError, StudyIndexError
from cmr_clip.privacy import PHIError
from cmr_clip.synthetic import make_cohort

DIM = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def empty_index(model_dir):
    return CMRStudyIndex.from_model(model_dir)


def random_index(model_dir, n, backend="exact", seed=0, **settings):
    index = CMRStudyIndex.from_model(model_dir, backend=backend, **settings)
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


def ids_of(hits):
    return [[h["study_id"] for h in row] for row in hits]


def test_saved_files_are_standard_safetensors_and_parquet_and_load_memory_mapped(model_dir, tmp_path):
    index = random_index(model_dir, 300)
    index.impressions[5] = "Transmural LGE."
    index.save(tmp_path / "idx")
    stored = load_file(str(tmp_path / "idx" / "embeddings.safetensors"))["embeddings"]  # read by safetensors itself
    np.testing.assert_array_equal(stored, index.embeddings.numpy())
    table = pq.read_table(tmp_path / "idx" / "manifest.parquet").to_pydict()
    assert table["study_id"] == index.study_ids and table["impression"][5] == "Transmural LGE."
    assert "study_ids" not in json.loads((tmp_path / "idx" / "manifest.json").read_text())
    loaded = CMRStudyIndex.load(tmp_path / "idx")
    assert isinstance(loaded._matrix, np.memmap)  # pages come from the file as they are searched
    queries = torch.randn(4, DIM, generator=torch.Generator().manual_seed(3))
    assert ids_of(loaded.search(queries, k=10)) == ids_of(index.search(queries, k=10))
    loaded.add_embeddings(torch.randn(2, DIM), ["new0", "new1"])  # the file is left as it was
    loaded.save(tmp_path / "idx")
    assert CMRStudyIndex.load(tmp_path / "idx").study_ids[-2:] == ["new0", "new1"]
    assert len(load_file(str(tmp_path / "idx" / "embeddings.safetensors"))["embeddings"]) == 302


def test_float16_storage_halves_the_file_and_keeps_the_ranking(model_dir, tmp_path):
    full, half = random_index(model_dir, 2000), random_index(model_dir, 2000, dtype="float16")
    queries = torch.randn(5, DIM, generator=torch.Generator().manual_seed(4))
    for row_full, row_half in zip(full.search(queries, k=10), half.search(queries, k=10)):
        assert row_half[0]["study_id"] == row_full[0]["study_id"]
        assert [h["score"] for h in row_half] == pytest.approx([h["score"] for h in row_full], abs=2e-3)
    full.save(tmp_path / "full")
    half.save(tmp_path / "half")
    assert load_file(str(tmp_path / "half" / "embeddings.safetensors"))["embeddings"].dtype == np.float16
    sizes = [(tmp_path / name / "embeddings.safetensors").stat().st_size for name in ("half", "full")]
    assert sizes[0] < 0.55 * sizes[1]
    loaded = CMRStudyIndex.load(tmp_path / "half")
    assert loaded.dtype == "float16" and ids_of(loaded.search(queries, k=10)) == ids_of(half.search(queries, k=10))
    with pytest.raises(StudyIndexError, match="unknown dtype 'int8'"):
        random_index(model_dir, 1, dtype="int8")


def test_format_1_index_still_loads(model_dir, tmp_path):
    """Format 1, as written before: ids and impressions inside manifest.json, float32 safetensors."""
    reference = random_index(model_dir, 40)
    folder = tmp_path / "v1"
    folder.mkdir()
    save_file({"embeddings": reference.embeddings.clone()}, str(folder / "embeddings.safetensors"))
    (folder / "manifest.json").write_text(json.dumps({
        "format_version": 1, "model_fingerprint": reference.fingerprint, "model_name_or_path": str(model_dir),
        "dim": DIM, "count": 40, "backend": "exact", "faiss_index": "Flat", "study_ids": reference.study_ids,
        "impressions": ["impression"] * 40}))
    loaded = CMRStudyIndex.load(folder)
    queries = torch.randn(3, DIM)
    assert ids_of(loaded.search(queries, k=5)) == ids_of(reference.search(queries, k=5))
    assert loaded.impressions == ["impression"] * 40
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(StudyIndexError, match=r"index format 99.*Rebuild it with `cmr-clip index build`"):
        CMRStudyIndex.load(folder)


def test_identifier_in_impressions_is_refused_before_anything_is_written(model_dir, tmp_path):
    index = random_index(model_dir, 3)
    index.impressions[1] = "MRN 00123456: no LGE."
    with pytest.raises(PHIError, match=r"manifest.parquet: impression\[1\]") as error:
        index.save(tmp_path / "refused")
    assert "00123456" not in str(error.value) and list((tmp_path / "refused").iterdir()) == []


def _seconds_to_add(bound, n, batch=64):
    index = CMRStudyIndex(bound.model, bound.processor)
    rows = torch.randn(n, DIM)
    ids = [f"S{i:07d}" for i in range(n)]
    start = time.perf_counter()
    for first in range(0, n, batch):
        index.add_embeddings(rows[first:first + batch], ids[first:first + batch])
    return time.perf_counter() - start


def test_adding_in_batches_of_64_takes_time_linear_in_the_count(empty_index):
    """Four times the embeddings may take about four times as long; copying the matrix on every batch (the old
    way) makes it about sixteen. The sizes alternate and the best of five counts, to ride out a busy machine."""
    rounds = [(_seconds_to_add(empty_index, 25_000), _seconds_to_add(empty_index, 100_000)) for _ in range(5)]
    small, large = (min(times) for times in zip(*rounds))
    assert large / small < 8, rounds


def test_faiss_index_is_saved_and_reused_until_stale(model_dir, tmp_path, monkeypatch):
    faiss = pytest.importorskip("faiss")
    index = random_index(model_dir, 1000, backend="faiss", faiss_index="HNSW16,Flat", faiss_params="efSearch=64")
    queries = torch.randn(6, DIM, generator=torch.Generator().manual_seed(5))
    before = ids_of(index.search(queries, k=10))
    index.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "index.faiss").is_file()
    built = []
    original_factory = faiss.index_factory
    monkeypatch.setattr(faiss, "index_factory", lambda *a: built.append(a) or original_factory(*a))
    loaded = CMRStudyIndex.load(tmp_path / "idx")
    assert ids_of(loaded.search(queries, k=10)) == before and built == []  # read back, not built again
    loaded.add_embeddings(torch.randn(10, DIM), [f"new{i}" for i in range(10)])
    assert loaded.search(loaded.embeddings[-1], k=1)[0]["study_id"] == "new9" and built == []  # added to it
    loaded.backend = "exact"
    loaded.save(tmp_path / "idx")  # an exact save leaves no FAISS file to go stale
    assert not (tmp_path / "idx" / "index.faiss").exists()
    rebuilt = CMRStudyIndex.load(tmp_path / "idx", backend="faiss", faiss_index="Flat")
    assert rebuilt.search(queries[0], k=1)[0]["study_id"] == loaded.search(queries[0], k=1)[0]["study_id"]
    assert len(built) == 1


def test_recall_against_exact_search(model_dir):
    pytest.importorskip("faiss")
    queries = torch.randn(50, DIM, generator=torch.Generator().manual_seed(6))
    assert random_index(model_dir, 3000).recall_against_exact(queries, k=10) == 1.0
    coarse = random_index(model_dir, 3000, backend="faiss", faiss_index="IVF64,Flat", faiss_params="nprobe=1")
    recall = coarse.recall_against_exact(queries, k=10)
    assert 0.0 < recall < 0.9
    built = coarse._faiss
    coarse.faiss_params = "nprobe=64"  # every list probed: exact again, on the FAISS index already built
    assert coarse.recall_against_exact(queries, k=10) == 1.0
    assert coarse._faiss is built
    with pytest.raises(IndexBackendError, match="efSearch=64.*'IVF64,Flat'"):
        coarse.faiss_params = "efSearch=64"
    assert coarse.faiss_params == "nprobe=64" and coarse.recall_against_exact(queries, k=10) == 1.0


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


def test_cli_builds_a_float16_faiss_index_and_refuses_an_unknown_split(model_dir, tmp_path, capsys):
    from cmr_clip.cli import main

    pytest.importorskip("faiss")
    tiny_corpus(4).save_to_disk(str(tmp_path / "corpus"))
    out = tmp_path / "index"
    assert main(["index", "build", "--model", str(model_dir), "--data-dir", str(tmp_path / "corpus"), "--output-dir",
                 str(out), "--backend", "faiss", "--faiss-index", "HNSW8,Flat", "--faiss-params", "efSearch=16",
                 "--storage-dtype", "float16"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "index.faiss").is_file() and "float16" in json.dumps(manifest) and "HNSW8,Flat" in json.dumps(manifest)
    assert len(CMRStudyIndex.load(out)) == 4
    capsys.readouterr()
    assert main(["index", "build", "--model", str(model_dir), "--data-dir", str(tmp_path / "corpus"), "--split", "val",
                 "--output-dir", str(tmp_path / "other")]) == 2
    assert "--split val: the corpus has the splits" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_script_runs_and_reports_recall(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("faiss")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "index_search.py"
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(script), "--n", "3000", "--baseline-n", "1000", "--projection-dim", "32",
                             "--clusters", "64", "--queries", "20", "--repeats", "2", "--threads", "1",
                             "--approximate", "IVF16,Flat:nprobe=16", "IVF16,Flat:nprobe=1", "--json", str(out),
                             "--large-n", "5000", "--large-index", "IVF16,PQ4x4:nprobe=16,rerank=500",
                             "--large-sweep", "nprobe=1", "nprobe=16,rerank=500"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["n"] == 3000 and figures["exact_float32"]["query_ms"] > 0 and figures["add_old_over_new"] > 0
    assert figures["IVF16,Flat:nprobe=16"]["recall@10"] == 1.0  # every list probed
    assert figures["IVF16,Flat:nprobe=1"]["recall@10"] < 1.0
    # The large run: storage reserved, every row a candidate for the exact re-ranking, so exact search's results.
    assert figures["large"]["large_n"] == 5000 and figures["large"]["large_recall@10"] == 1.0
    # The sweep re-sets the search parameters on that one build: one list of 4-bit codes loses neighbours.
    assert figures["large"]["large nprobe=1"]["recall@10"] < 0.9
    assert figures["large"]["large nprobe=16,rerank=500"]["recall@10"] == 1.0
    assert result.stdout.index("recall@10") < result.stdout.index("large:")  # the figures before it printed first
    assert "recall@10" in result.stdout


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


def test_an_index_loads_with_a_copy_of_its_model_in_another_folder(model_dir, tmp_path):
    """The fingerprint is the weights and config, not the folder they were loaded from (a Space copies the model)."""
    import shutil

    index = random_index(model_dir, 20)
    index.save(tmp_path / "idx")
    copy = shutil.copytree(model_dir, tmp_path / "elsewhere" / "model")
    loaded = CMRStudyIndex.load(tmp_path / "idx", model=copy)
    assert loaded.study_ids == index.study_ids
    with pytest.raises(IndexModelMismatchError):
        CMRStudyIndex.load(tmp_path / "idx", model=save_random_model(tmp_path / "other", seed=3))


def test_an_index_saved_with_the_older_fingerprint_still_loads(model_dir, tmp_path):
    """Indexes saved before the fingerprint left out the model's folder recorded it with the folder."""
    from cmr_clip.index import model_fingerprint

    index = random_index(model_dir, 10)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    manifest["model_fingerprint"] = model_fingerprint(index.model, with_folder=True)
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    assert CMRStudyIndex.load(tmp_path / "idx").study_ids == index.study_ids


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_an_index_loads_with_the_model_a_pipeline_already_converted(model_dir, tmp_path, monkeypatch, quantize):
    """The app hands the index the zero-shot pipeline's model, which "auto" casts to bfloat16 on a CPU with native
    bf16 (simulated here) and `quantize` quantises: still the model the index was built with, in float32.
    Another model, converted the same way, is still refused."""
    from transformers import pipeline

    import cmr_clip.precision

    if quantize:
        pytest.importorskip("torchao")
    index = random_index(model_dir, 12, model_dtype="float32")
    index.save(tmp_path / "idx")
    monkeypatch.setattr(cmr_clip.precision, "native_bf16", lambda device="cpu": (True, "simulated native bf16"))
    classify = pipeline("zero-shot-cmr", model=str(model_dir), quantize=quantize)
    assert classify.precision.name == "bfloat16" + (f"+{quantize}" if quantize else "")
    assert next(classify.model.parameters()).dtype == torch.bfloat16
    loaded = CMRStudyIndex.load(tmp_path / "idx", model=classify.model, processor=classify.processor)
    assert loaded.study_ids == index.study_ids and loaded.fingerprint == index.fingerprint
    other = pipeline("zero-shot-cmr", model=str(save_random_model(tmp_path / "other", seed=3)), quantize=quantize)
    with pytest.raises(IndexModelMismatchError, match="built with another model"):
        CMRStudyIndex.load(tmp_path / "idx", model=other.model, processor=other.processor)


def test_a_model_loaded_in_bfloat16_is_refused_with_the_way_out(model_dir, tmp_path):
    """A model loaded directly in bfloat16 (`pipeline(..., dtype="bfloat16")` passes it to `from_pretrained`) no
    longer holds the float32 weights: refused, with an error that says how to load the index instead."""
    from transformers import pipeline

    index = random_index(model_dir, 5, model_dtype="float32")
    index.save(tmp_path / "idx")
    classify = pipeline("zero-shot-cmr", model=str(model_dir), dtype="bfloat16")
    with pytest.raises(IndexModelMismatchError, match="loaded in bfloat16.*pass its folder instead"):
        CMRStudyIndex.load(tmp_path / "idx", model=classify.model, processor=classify.processor)
    assert CMRStudyIndex.load(tmp_path / "idx", model=model_dir, model_dtype="bfloat16").study_ids == index.study_ids


def test_reserve_allocates_once_and_adding_up_to_it_copies_nothing(model_dir):
    """After `reserve(n)`, adding n embeddings in batches keeps one buffer (no growth copies: the peak memory of
    a 10M-study build is the embeddings, not three times them); the rows are those added."""
    index = CMRStudyIndex.from_model(model_dir, dtype="float16")
    index.reserve(1000)
    address = index._matrix.__array_interface__["data"][0]
    vectors = torch.randn(1000, DIM, generator=torch.Generator().manual_seed(4))
    for start in range(0, 1000, 64):
        index.add_embeddings(vectors[start:start + 64], [f"S{i}" for i in range(start, min(start + 64, 1000))])
    assert index._matrix.__array_interface__["data"][0] == address and index._matrix.shape == (1000, DIM)
    expected = torch.nn.functional.normalize(vectors, dim=-1).half().float()
    assert torch.allclose(index.embeddings.float(), expected, atol=1e-3)
    index.reserve(10)  # less than it holds: nothing changes
    assert index._matrix.__array_interface__["data"][0] == address
    index.add_embeddings(vectors[:1], ["S1000"])  # past the reservation: grows as before
    assert len(index) == 1001 and index._matrix.shape[0] >= 2000


def test_training_sample_is_every_row_or_a_seeded_random_subset():
    from cmr_clip.index import training_sample

    matrix = np.arange(40, dtype=np.float16).reshape(20, 2)
    whole = training_sample(matrix, 20)
    assert whole.dtype == np.float32 and np.array_equal(whole, matrix.astype(np.float32))
    sample = training_sample(matrix, 5)
    rows = sample[:, 0].astype(int) // 2
    assert sample.shape == (5, 2) and len(set(rows)) == 5 and list(rows) == sorted(rows)
    assert np.array_equal(sample, matrix[rows].astype(np.float32)) and np.array_equal(sample, training_sample(matrix, 5))


def test_a_faiss_index_trained_on_a_sample_and_filled_in_chunks_holds_every_row(model_dir, monkeypatch):
    """Past `FAISS_TRAIN_ROWS` the FAISS index trains on a sample and takes the rows in chunks; searching every
    IVF list still finds exactly what exact search finds."""
    pytest.importorskip("faiss")
    import cmr_clip.index

    monkeypatch.setattr(cmr_clip.index, "FAISS_TRAIN_ROWS", 400)
    monkeypatch.setattr(cmr_clip.index, "FAISS_ADD_CHUNK", 300)
    index = random_index(model_dir, 1000, backend="faiss", faiss_index="IVF8,Flat", faiss_params="nprobe=8")
    assert index._faiss_index().ntotal == 1000
    assert index.recall_against_exact(torch.randn(20, DIM, generator=torch.Generator().manual_seed(2)), 10) == 1.0


def test_rerank_turns_a_coarse_ivf_pq_index_into_exact_scores(model_dir):
    """IVF-PQ with 4-bit codes over 16 dimensions ranks poorly on its own; with rerank the candidates are scored
    by exact cosine against the stored embeddings, so with every list probed and every row a candidate the
    results are exact search's, scores included."""
    pytest.importorskip("faiss")
    coarse = random_index(model_dir, 600, backend="faiss", faiss_index="IVF4,PQ4x4", faiss_params="nprobe=4")
    queries = torch.randn(20, DIM, generator=torch.Generator().manual_seed(3))
    assert coarse.recall_against_exact(queries, 10) < 0.9
    reranked = random_index(model_dir, 600, backend="faiss", faiss_index="IVF4,PQ4x4", faiss_params="nprobe=4, rerank=60")
    assert reranked.recall_against_exact(queries, 10) == 1.0
    scores, positions = reranked.top_k(queries, 10)
    expected = brute_force(reranked, queries, 10)  # numpy cosine over the stored rows, not the index's search
    assert positions.tolist() == expected.tolist()
    unit = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    expected_scores = np.take_along_axis(unit @ reranked.embeddings.numpy().T, expected, axis=1)
    assert np.allclose(scores.numpy(), expected_scores, atol=1e-6)
    partly = random_index(model_dir, 600, backend="faiss", faiss_index="IVF4,PQ4x4", faiss_params="nprobe=4,rerank=4")
    assert coarse.recall_against_exact(queries, 10) < partly.recall_against_exact(queries, 10)
    with pytest.raises(IndexBackendError, match="rerank must be a whole number"):
        random_index(model_dir, 300, backend="faiss", faiss_index="IVF4,PQ4x4", faiss_params="rerank=some").top_k(queries, 3)
