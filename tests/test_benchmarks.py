"""The benchmark scripts still run and still print their ratio line (at a size that takes seconds)."""

import importlib.util
import re
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_predict_benchmark_runs(capsys, tmp_path):
    from test_zero_shot_support import save_random_model

    from cmr_clip.synthetic import make_cohort

    make_cohort(tmp_path / "cohort", 2, seed=1, progress=False, num_workers=1)
    model = save_random_model(tmp_path / "model")
    result = _load_script("predict").main(["--model", str(model), "--studies-dir", str(tmp_path / "cohort" / "studies"),
                                           "--num-workers", "1", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert re.search(r"^ratio predict / per-study CLI  \d+\.\d\dx$", out, re.M), out
    assert result["studies"] == 2 and result["largest_probability_difference"] < 1e-4
