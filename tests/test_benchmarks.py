"""The benchmark scripts still run and still print their ratio line (at a size that takes seconds)."""

import importlib.util
import platform
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_zero_shot_support import save_random_model, tiny_corpus

from cmr_clip import CMRCLIPVisionConfig, CMRCLIPVisionModel
from cmr_clip.modeling.convert_original_checkpoint import convert, original_key
from cmr_clip.precision import cpp_compiler, native_bf16, onednn_linear_pays
from cmr_clip.synthetic import make_cohort

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / ".." / "shared" / "fixtures" / "reference_cmrclip"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # about 28 s: a fresh interpreter per implementation for its peak memory; `-m slow` runs it
def test_video_encoder_benchmark_runs(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports the release baseline beside it
    video_encoder = _load_script("video_encoder")

    assert video_encoder.main(["--size", "tiny", "--repeats", "1"]) == 0

    out = capsys.readouterr().out
    figures = r"(\s+\d+\.\d){4}"
    ratios = r"(\s+(\d+\.\d\dx|n/a)){4}"
    for impl in ("release", "timesformer", "sdpa", "eager", "sdpa-onednn", "sdpa-bf16"):
        assert re.search(rf"^{impl}{figures}$", out, re.M), out
        assert re.search(rf"^{impl}{ratios}$", out, re.M), out
    # Times are ratios to themselves; at this tiny size a peak can round to 0.0 MiB, whose ratio is n/a.
    assert re.search(r"^release\s+1\.00x\s+1\.00x(\s+(1\.00x|n/a)){2}$", out, re.M), out
    # The header follows the package's rule ("auto"'s), not a probe of its own.
    assert f"native bf16: {'yes' if native_bf16('cpu')[0] else 'no'};" in out, out
    assert f"oneDNN float32 linear pays: {'yes' if onednn_linear_pays()[0] else 'no'};" in out, out


def test_release_baseline_computes_the_release_features_with_our_weights(monkeypatch):
    """The benchmark's release-style tower is faithful: loaded with the golden fixture's weights (made with the
    authors' code) it gives the fixture's video features, and so does our tower; loaded from our tower's state
    dict through the converter's key map it gives our pooled output."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    release_video_tower = _load_script("release_video_tower")
    original = load_file(str(FIXTURE / "reference_state_dict.safetensors"))
    io = load_file(str(FIXTURE / "reference_io.safetensors"))
    ours = convert(FIXTURE / "reference_state_dict.safetensors", FIXTURE / "reference_config.json").vision_model
    from_fixture = release_video_tower.ReleaseVideoTower.from_config(ours.config).eval()
    from_fixture.load_state_dict({k.removeprefix("video_model."): v for k, v in original.items()
                                  if k.startswith("video_model.")})
    from_ours = release_video_tower.ReleaseVideoTower.from_config(ours.config).eval()
    from_ours.load_tower_weights(ours.state_dict())

    with torch.no_grad():
        pooled = ours(pixel_values_videos=io["pixel_values"]).pooler_output
        baseline = from_fixture(io["pixel_values"])
        baseline_from_ours = from_ours(io["pixel_values"])

    assert io["pixel_values"].shape[1] < ours.config.num_frames  # fewer frames than built for, as the fixture has
    torch.testing.assert_close(baseline, io["video_features"], rtol=0, atol=1e-5)
    torch.testing.assert_close(baseline, pooled, rtol=0, atol=1e-5)
    torch.testing.assert_close(baseline_from_ours, pooled, rtol=0, atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_our_tower_trains_like_the_release_baseline(monkeypatch, attn_implementation):
    """Same weights, same batch (two studies, fewer frames than built for): our tower's CLS output and every
    weight's gradient equal those of the release-style tower, whose attention shares no code with ours."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    release_video_tower = _load_script("release_video_tower")
    config = CMRCLIPVisionConfig(num_frames=4, image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=128, time_init="normal")
    torch.manual_seed(0)
    ours = CMRCLIPVisionModel._from_config(config, attn_implementation=attn_implementation)
    baseline = release_video_tower.ReleaseVideoTower.from_config(config)
    baseline.load_tower_weights(ours.state_dict())
    videos = torch.randn(2, 3, 3, 32, 32)
    weights = torch.linspace(-1, 1, 64)  # a loss that weighs every feature differently

    pooled = ours(pixel_values_videos=videos).pooler_output
    expected = baseline(videos)
    (pooled * weights).sum().backward()
    (expected * weights).sum().backward()

    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-5)
    baseline_parameters = dict(baseline.named_parameters())
    for name, parameter in ours.named_parameters():
        release_name = original_key(f"vision_model.{name}").removeprefix("video_model.")
        expected_grad = baseline_parameters[release_name].grad.reshape(parameter.shape)
        scale = expected_grad.abs().max()  # float32 rounding grows with the gradient (up to about 100 here)
        assert (parameter.grad - expected_grad).abs().max() <= 1e-6 * scale + 1e-7, name


@pytest.mark.slow  # about 25 s of fresh interpreters, each importing the package; `-m slow` runs it
def test_training_benchmark_runs(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its sibling's memory probe
    training = _load_script("training")

    assert training.main(["--size", "tiny", "--steps", "1", "--batch", "2"]) == 0

    out = capsys.readouterr().out
    assert re.search(r"^no checkpointing\s+\d+\.\d\d\s+(\d+\.\d|n/a)\s+1\.00x", out, re.M), out
    assert re.search(r"^checkpointing\s+\d+\.\d\d\s+(\d+\.\d|n/a)\s+\d+\.\d\dx", out, re.M), out
    assert re.search(r"^bf16 autocast\s+\d+\.\d\d\s+(\d+\.\d|n/a)\s+\d+\.\d\dx", out, re.M), out
    assert re.search(r"^fp32 oneDNN linear\s+\d+\.\d\d\s+(\d+\.\d|n/a)\s+\d+\.\d\dx", out, re.M), out
    assert f"native bf16: {'yes' if native_bf16('cpu')[0] else 'no'}" in out, out


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
    compiles = cpp_compiler() is not None  # torch.compile builds CPU kernels with a C++ compiler

    result = inference_precision.main(["--model", str(model), "--data-dir", str(tmp_path / "corpus"), "--batch", "2",
                                       "--repeats", "1", "--precisions", "float32", "bfloat16",
                                       *(["--compile"] if compiles else [])])

    out = capsys.readouterr().out
    for name in ("bfloat16", "bfloat16 compiled") if compiles else ("bfloat16",):
        assert re.search(rf"^\| {name} \| \d+\.\d{{3}} \| \d+\.\d\dx \| \d+\.\d \| [01]\.\d{{5}} \| [01]\.\d{{5}} \| "
                         r"\d+ of \d+ \|$", out, re.M), out
    assert re.search(r"^one 256 x 768 x 3072 matrix product against float32: bfloat16 \d+\.\d\dx, int8 \(torch._int_mm\) "
                     r"\d+\.\d\dx$", out, re.M), out
    # On a CPU where float32 runs through oneDNN, torch's own float32 (MKL) is a row and a column too.
    columns = (3 if onednn_linear_pays()[0] else 2) + (2 if compiles else 0)  # and the two compiled precisions
    assert re.search(rf"^\| lge( \| \d\.\d{{3}}){{{columns}}} \|$", out, re.M), out
    assert result["precisions"]["float32"]["speedup"] == 1.0
    assert ("float32-mkl" in result["precisions"]) == onednn_linear_pays()[0]
    if compiles:
        compiled = result["precisions"]["float32 compiled"]
        assert compiled["cosine"]["min"] >= 0.9999 and compiled["changed_decisions"] == 0


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES is glibc's")
def test_allocator_benchmark_times_each_setting_in_its_own_process(capsys, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports inference_precision beside it
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")  # the children's own settings win
    model = save_random_model(tmp_path / "model")
    tiny_corpus(n_per_split=4).save_to_disk(str(tmp_path / "corpus"))

    result = _load_script("allocator").main(["--model", str(model), "--data-dir", str(tmp_path / "corpus"),
                                             "--batch", "2", "--repeats", "1", "--rounds", "1"])

    out = capsys.readouterr().out
    default, kept = result["settings"]["glibc default"], result["settings"]["keeping freed memory"]
    assert default["glibc_tunables"] is None  # each child saw its own setting, not the parent's
    assert kept["glibc_tunables"] == "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
    for precision in ("float32", "bfloat16"):
        assert re.search(rf"^\| {precision} \| \d+\.\d{{3}} \(\d+\.\d{{3}}\) \| \d+\.\d{{3}} \(\d+\.\d{{3}}\) \| "
                         r"\d+\.\d\dx \|$", out, re.M), out
    assert re.search(r"^bfloat16 against float32: \d+\.\d\dx with glibc's defaults, \d+\.\d\dx keeping freed memory$",
                     out, re.M), out
    assert 100 < default["peak_rss_mib"] < 20_000 and 100 < kept["peak_rss_mib"] < 20_000  # MiB, not KiB or bytes


@pytest.mark.slow
def test_predict_benchmark_runs(capsys, tmp_path):
    make_cohort(tmp_path / "cohort", 2, seed=1, progress=False, num_workers=1)
    model = save_random_model(tmp_path / "model")
    result = _load_script("predict").main(["--model", str(model), "--studies-dir", str(tmp_path / "cohort" / "studies"),
                                           "--num-workers", "1", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert re.search(r"^ratio predict / per-study CLI  \d+\.\d\dx$", out, re.M), out
    assert result["studies"] == 2 and result["largest_probability_difference"] < 1e-4


@pytest.mark.slow  # about 25 s of fresh interpreters, each importing the package; `-m slow` runs it
def test_prepare_benchmark_runs_old_and_new_code(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its sibling old_code
    prepare = _load_script("prepare")

    times = prepare.main(["--n", "1"])

    out = capsys.readouterr().out
    assert re.search(r"^new/old speed: wall \d+\.\d\dx, cpu \d+\.\d\dx$", out, re.M), out
    assert all(times[code]["seconds"] > 0 for code in ("old", "new"))


def test_training_overheads_benchmark_prints_its_ratios(capsys):
    training_overheads = _load_script("training_overheads")

    assert training_overheads.main(["--studies", "12", "--candidates", "12", "--repeats", "1", "--optimizer"]) == 0

    out = capsys.readouterr().out
    assert re.search(r"^reading 12 studies for an epoch \(s\): datasets rows -> zero-copy\s+\d+\.\d{3}\s+\d+\.\d{3}\s+\d+\.\d\dx$",
                     out, re.M), out
    assert re.search(r"^AdamW step, 1\.37M parameters \(ms\): for-loop -> fused \(not used\)(\s+\d+\.\d\d){2}\s+\d+\.\d\dx$",
                     out, re.M), out
