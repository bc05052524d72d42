"""The benchmark scripts still run and still print their ratio line (at a size that takes seconds)."""

import importlib.util
import re
from pathlib import Path

from test_zero_shot_support import save_random_model, tiny_corpus

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_video_encoder_benchmark_runs(capsys):
    video_encoder = _load_script("video_encoder")

    assert video_encoder.main(["--size", "tiny", "--repeats", "1"]) == 0

    out = capsys.readouterr().out
    assert re.search(r"^eager(\s+\d+\.\d){4}$", out, re.M), out
    assert re.search(r"^sdpa(\s+\d+\.\d){4}$", out, re.M), out
    number_or_na = r"(\d+\.\d\dx|n/a)"
    ratio_line = (
        rf"^sdpa/eager: fwd ms \d+\.\d\dx, fwd\+bwd ms \d+\.\d\dx, "
        rf"fwd peak MiB {number_or_na}, fwd\+bwd peak MiB {number_or_na}$"
    )
    assert re.search(ratio_line, out, re.M), out


def test_training_benchmark_runs(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its sibling's memory probe
    training = _load_script("training")

    assert training.main(["--size", "tiny", "--steps", "1", "--batch", "2"]) == 0

    out = capsys.readouterr().out
    assert re.search(r"^no checkpointing\s+\d+\.\d\d\s+(\d+\.\d|n/a)\s+1\.00x", out, re.M), out
    assert re.search(r"^checkpointing\s+\d+\.\d\d\s+(\d+\.\d|n/a)\s+\d+\.\d\dx", out, re.M), out


def test_report_generation_benchmark_runs(capsys):
    report_generation = _load_script("report_generation")

    result = report_generation.main(["--size", "tiny", "--repeats", "1", "--new-tokens", "6"])

    out = capsys.readouterr().out
    assert re.search(r"^  ratio\s+\d+\.\d\dx$", out, re.M), out
    assert result["tokens_per_s_kv_cache"] > 0 and result["tokens_per_s_no_cache"] > 0


def test_inference_precision_benchmark_runs(capsys, tmp_path):
    model = save_random_model(tmp_path / "model")
    tiny_corpus(n_per_split=4).save_to_disk(str(tmp_path / "corpus"))
    inference_precision = _load_script("inference_precision")

    result = inference_precision.main(["--model", str(model), "--data-dir", str(tmp_path / "corpus"), "--batch", "2",
                                       "--repeats", "1", "--precisions", "float32", "bfloat16"])

    out = capsys.readouterr().out
    assert re.search(r"^\| bfloat16 \| \d+\.\d{3} \| \d+\.\d\dx \| [01]\.\d{5} \| [01]\.\d{5} \| \d+ of \d+ \|$", out, re.M), out
    assert re.search(r"^one 256 x 768 x 3072 matrix product against float32: bfloat16 \d+\.\d\dx, int8 \(torch._int_mm\) "
                     r"\d+\.\d\dx$", out, re.M), out
    assert re.search(r"^\| lge \| \d\.\d{3} \| \d\.\d{3} \|$", out, re.M), out
    assert result["precisions"]["float32"]["speedup"] == 1.0
