"""The benchmark scripts still run and still print their ratio line (at a size that takes seconds)."""

import importlib.util
import re
from pathlib import Path

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


def test_prepare_benchmark_runs_old_and_new_code(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its sibling old_code
    prepare = _load_script("prepare")

    times = prepare.main(["--n", "1"])

    out = capsys.readouterr().out
    assert re.search(r"^new/old speed: wall \d+\.\d\dx, cpu \d+\.\d\dx$", out, re.M), out
    assert all(times[code]["seconds"] > 0 for code in ("old", "new"))
