"""zero-shot-cmr: the pipeline from a fresh process, its numbers against a direct computation with the model's
embeddings, every input kind and batching agreeing, thresholds giving yes/no, estimates, prompt-set errors,
processor warnings passed through, and the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from test_zero_shot_support import save_random_model
from transformers import pipeline

import cmr_clip
from cmr_clip import CMRCLIPModel, CMRCLIPProcessor, PromptSet, read_study
from cmr_clip.evaluation.zero_shot import youden_thresholds
from cmr_clip.pipelines import PromptSetError
from cmr_clip.pipelines.scoring import side_similarity, value_estimate
from cmr_clip.synthetic import make_cohort


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root, 2, seed=5, progress=False, num_workers=1)
    return sorted(str(p) for p in (root / "studies").iterdir())


@pytest.fixture(scope="module")
def classify(model_dir):
    """In float32, as the direct computations the tests compare it with ("auto" is bfloat16 on a CPU with native
    bf16)."""
    return pipeline("zero-shot-cmr", model=str(model_dir), dtype="float32")


def direct_embeddings(model_dir, studies):
    """Study and text embeddings computed straight from the model, without the pipeline's code."""
    model, processor = CMRCLIPModel.from_pretrained(model_dir).eval(), CMRCLIPProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        videos = model.get_video_features(pixel_values_videos=processor(studies=studies)["pixel_values_videos"]).pooler_output

    @torch.no_grad()
    def texts(prompts):
        tokens = processor(text=prompts)
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return torch.nn.functional.normalize(out.pooler_output, dim=-1)

    return torch.nn.functional.normalize(videos, dim=-1), texts, float(model.logit_scale_value())


def test_fresh_process_pipeline_returns_scores_for_a_synthetic_study(model_dir, studies):
    code = (
        "import json, sys, cmr_clip\n"
        "from transformers import pipeline\n"
        "classify = pipeline('zero-shot-cmr', model=sys.argv[1])\n"
        "print(json.dumps(classify(sys.argv[2], candidate_labels=['hcm', 'amyloidosis', 'normal'], findings=True)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(model_dir), studies[0]], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    labels = answer["labels"]
    assert {item["label"] for item in labels} == {"hcm", "amyloidosis", "normal"}
    assert sum(item["score"] for item in labels) == pytest.approx(1.0, abs=1e-5)
    assert [item["score"] for item in labels] == sorted((item["score"] for item in labels), reverse=True)
    assert {item["finding"] for item in answer["findings"]} == set(PromptSet.load().findings)
    assert all(0.0 < item["score"] < 1.0 for item in answer["findings"])


def test_pipeline_equals_direct_computation(classify, model_dir, studies):
    prompts = PromptSet.load()
    videos, texts, scale = direct_embeddings(model_dir, studies)
    answers = classify(studies, candidate_labels=["hcm", "dilated lv"], findings=["lge", "lv_dilation"],
                       estimate="lvef", batch_size=2)
    assert len(answers) == len(studies)

    def mean_direction(group):
        return torch.nn.functional.normalize(texts(group).mean(0), dim=-1)

    labels = torch.stack([mean_direction(prompts.diseases["hcm"]), mean_direction(["dilated lv."])])
    expected_labels = (scale * videos @ labels.T).softmax(-1)
    spec = prompts.estimates["lvef"]
    grid = torch.stack([mean_direction(group) for group in spec["prompts"]])  # the built-in set grades in words
    expected_lvef = (scale * videos @ grid.T).softmax(-1) @ torch.tensor(spec["values"], dtype=torch.float32)
    for i, answer in enumerate(answers):
        got_labels = {item["label"]: item["score"] for item in answer["labels"]}
        assert got_labels["hcm"] == pytest.approx(float(expected_labels[i, 0]), abs=1e-5)
        assert got_labels["dilated lv"] == pytest.approx(float(expected_labels[i, 1]), abs=1e-5)
        for item in answer["findings"]:
            finding = prompts.findings[item["finding"]]
            if item["finding"] == "lge":  # its prompts are distinct patterns: the closest one of each side counts
                assert finding["match"] == "any"
                positive, negative = (float((texts(finding[side]) @ videos[i]).max()) for side in ("positive", "negative"))
            else:
                positive, negative = (float(videos[i] @ mean_direction(finding[side])) for side in ("positive", "negative"))
            logits = scale * torch.tensor([positive, negative])
            assert item["score"] == pytest.approx(float(logits.softmax(0)[0]), abs=1e-5)
        assert answer["estimates"]["lvef"] == pytest.approx(float(expected_lvef[i]), abs=1e-3)


def test_paths_pixels_embeddings_and_batch_sizes_agree(classify, model_dir, studies):
    processor = CMRCLIPProcessor.from_pretrained(model_dir)
    pixels = processor(studies=studies)["pixel_values_videos"]
    videos, _, _ = direct_embeddings(model_dir, studies)
    by_path = classify(studies, batch_size=1)
    repeated = [0, 1, 0, 1, 1]  # five inputs in batches of two: full batches and a remainder
    by_pixels = classify([{"pixel_values_videos": pixels[i]} for i in repeated], batch_size=2)
    by_embedding = classify([{"video_embeds": videos[i]} for i in repeated], batch_size=3)
    for a, b, c in zip([by_path[i] for i in repeated], by_pixels, by_embedding):
        scores = [{f["finding"]: f["score"] for f in answer["findings"]} for answer in (a, b, c)]
        for name in scores[0]:
            assert scores[1][name] == pytest.approx(scores[0][name], abs=1e-5)
            assert scores[2][name] == pytest.approx(scores[0][name], abs=1e-5)
    single = classify(studies[0])
    assert isinstance(single, dict) and single["findings"] == by_path[0]["findings"]


def test_thresholds_saved_with_the_prompt_set_give_yes_no_answers(model_dir, studies, tmp_path):
    calibrated_dir = tmp_path / "calibrated"
    shutil.copytree(model_dir, calibrated_dir)
    data = PromptSet.load().to_dict()
    data["thresholds"] = {"lge": 0.0, "lv_dilation": 1.0, "rule": "test"}
    PromptSet.from_dict(data).save(calibrated_dir)
    answer = pipeline("zero-shot-cmr", model=str(calibrated_dir))(studies[0])
    by_name = {item["finding"]: item for item in answer["findings"]}
    assert by_name["lge"]["present"] is True and by_name["lv_dilation"]["present"] is False
    assert "present" not in by_name["rv_dilation"]


def test_youden_threshold_separates_separable_scores():
    scores = {"lge": np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])}
    labels = {"lge": np.array([0, 0, 0, 1, 1, np.nan])}
    threshold = youden_thresholds(scores, labels)["lge"]
    assert 0.3 < threshold <= 0.6
    assert youden_thresholds({"x": np.array([0.1, 0.2])}, {"x": np.array([1.0, 1.0])}) == {}


def test_a_side_of_distinct_patterns_matches_its_closest_pattern():
    """Three orthogonal patterns: a study lying on one of them is as close to the side as a study can be with
    "any" (cosine 1), and only 1/sqrt(3) from their mean direction with "ensemble"; a study between two of them
    is nearer the mean than either pattern."""
    patterns = torch.eye(3, 4)
    on_one, between = torch.tensor([[1.0, 0, 0, 0]]), torch.nn.functional.normalize(torch.tensor([[1.0, 1, 0, 0]]), dim=-1)
    assert float(side_similarity(on_one, patterns, "any")) == pytest.approx(1.0)
    assert float(side_similarity(on_one, patterns, "ensemble")) == pytest.approx(3 ** -0.5)
    assert float(side_similarity(between, patterns, "any")) == pytest.approx(2 ** -0.5)
    assert float(side_similarity(between, patterns, "ensemble")) == pytest.approx(2 / 6 ** 0.5)


def test_value_estimate_follows_the_nearest_grid_value():
    grid = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    values = torch.tensor([20.0, 30.0, 40.0, 50.0, 60.0])
    assert float(value_estimate(grid[1:2], grid, values, scale=200.0)) == pytest.approx(30.0, abs=0.5)
    flat = float(value_estimate(grid[1:2], grid, values, scale=0.0))
    assert flat == pytest.approx(40.0)


def test_prompt_set_errors_are_actionable(classify, tmp_path):
    with pytest.raises(PromptSetError, match="lv_dilation"):
        classify({"video_embeds": torch.randn(16)}, findings=["lv_dilatation"])
    with pytest.raises(PromptSetError, match="needs a"):
        classify({"video_embeds": torch.randn(16)}, candidate_labels=["hcm"], hypothesis_template="no slot")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"findings": {"lge": {"positive": ["LGE."], "negative": []}}}))
    with pytest.raises(PromptSetError, match="negative"):
        PromptSet.load(bad)
    bad.write_text(json.dumps({"findings": {"lge": {"positive": ["LGE."], "negative": ["No LGE."], "match": "max"}}}))
    with pytest.raises(PromptSetError, match="'lge' has match 'max'; use one of .*ensemble.*any"):
        PromptSet.load(bad)
    with pytest.raises(PromptSetError, match="built-in name"):
        PromptSet.load(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="unknown arguments"):
        classify({"video_embeds": torch.randn(16)}, candidate_label=["hcm"])


def test_prompt_sets_install_as_package_data():
    data = Path(cmr_clip.__file__).parent / "pipelines" / "prompts" / "default.json"
    prompts = PromptSet.load(data)
    paper = {"lv_dysfunction", "rv_dysfunction", "lv_dilation", "rv_dilation", "lv_hypertrophy", "lge", "aortic_dilation"}
    assert paper <= set(prompts.findings)
    assert {"hcm", "amyloidosis", "icm", "nicm"} <= set(prompts.diseases)
    import configparser

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert "prompts/*.json" in setup["options.package_data"]["cmr_clip.pipelines"]


def test_processor_warnings_are_passed_through(classify, studies, tmp_path):
    study = tmp_path / "no_lge"
    shutil.copytree(studies[0], study)
    lge_uids = {uid for s in read_study(study).series if s.sequence == "lge" for uid in s.series_instance_uids}
    for path in [p for p in study.rglob("*") if p.is_file()]:
        if pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID in lge_uids:
            path.unlink()
    answer = classify(str(study))
    assert any("lge" in warning for warning in answer["warnings"]), answer["warnings"]
    assert str(tmp_path) not in json.dumps(answer)


def test_cli_prints_a_table_and_writes_json(model_dir, studies, tmp_path, capsys):
    from cmr_clip.cli import main

    out = tmp_path / "answers.json"
    assert main(["zero-shot", *studies[:2], "--model", str(model_dir), "--estimate", "lvef", "--findings",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| lge |" in printed and "lvef (estimate)" in printed
    saved = json.loads(out.read_text())
    assert [item["study"] for item in saved] == [Path(s).name for s in studies[:2]]
    assert "lvef" in saved[0]["estimates"] and len(saved[0]["findings"]) == len(PromptSet.load().findings)


def test_example_script_on_a_demo_shaped_folder(model_dir, tmp_path, capsys):
    import importlib.util

    from test_zero_shot_support import tiny_corpus

    demo = tmp_path / "demo"
    shutil.copytree(model_dir, demo)
    corpus = tiny_corpus(6)
    corpus.save_to_disk(str(demo / "corpus"))
    (demo / "cohort").mkdir()
    (demo / "cohort" / "reports.jsonl").write_text("".join(
        json.dumps({"study_id": sid, "measurements": {"lvef": 25.0 + 7 * i}}) + "\n"
        for i, sid in enumerate(corpus["test"]["study_id"])))
    spec = importlib.util.spec_from_file_location("zero_shot_demo", Path(__file__).resolve().parents[1] / "examples" / "zero_shot_demo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([str(demo), "--json", str(tmp_path / "figures.json")]) == 0
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["pipeline_vs_direct_max_abs_difference"] < 1e-4 and figures["test_studies"] == 6
    assert set(figures["auc"]) == {"lv_dilation", "lge"} and all(0.0 <= a <= 1.0 for a in figures["auc"].values())
    assert "LVEF estimate" in capsys.readouterr().out


@pytest.mark.slow
def test_example_on_a_demo_run_matches_the_direct_computation(tmp_path):
    from cmr_clip.demo import DemoSettings, run_demo

    out = tmp_path / "demo"
    metrics = run_demo(DemoSettings(out=str(out), studies=40, epochs=5, num_proc=2, progress=False))
    assert set(metrics["test_zero_shot"]["auc"]) == set(PromptSet.load().findings)
    assert (out / "zero_shot_prompts.json").is_file()
    script = Path(__file__).resolve().parents[1] / "examples" / "zero_shot_demo.py"
    result = subprocess.run([sys.executable, str(script), str(out), "--json", str(tmp_path / "figures.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["pipeline_vs_direct_max_abs_difference"] < 1e-4
    assert figures["test_studies"] == metrics["splits"]["test"]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_bad_study_is_reported_and_the_others_answered(classify, studies, tmp_path, batch_size):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "notes.txt").write_text("not DICOM")
    alone = classify(studies[0], findings=["lge"])
    answers = classify([str(broken), studies[0]], findings=["lge"], batch_size=batch_size)
    assert answers[0]["error"].startswith("NotAStudyError:") and "findings" not in answers[0]
    assert answers[1]["findings"][0]["score"] == pytest.approx(alone["findings"][0]["score"], abs=1e-5)
    assert str(tmp_path) not in json.dumps(answers)


def test_estimates_stated_in_words_and_calibrated(model_dir):
    """An estimate may state its values through graded phrases, one prompt list per value; its validation-fitted
    linear calibration maps the similarity-weighted value; a prompt list per value is checked against the values."""
    words = {"values": [25, 60], "unit": "%", "prompts": [["Severely impaired LV function."], ["Normal LV function."]]}
    prompts = PromptSet.from_dict({"findings": {}, "estimates": {"lvef": words}})
    calibrated = PromptSet.from_dict({"findings": {}, "estimates": {
        "lvef": {**words, "calibration": {"slope": 2.0, "intercept": -10.0}}}})
    classify = pipeline("zero-shot-cmr", model=str(model_dir), prompt_set=prompts)
    recalibrated = pipeline("zero-shot-cmr", model=str(model_dir), prompt_set=calibrated)
    study = {"video_embeds": torch.randn(16, generator=torch.Generator().manual_seed(3))}
    raw = classify(study, estimate="lvef")["estimates"]["lvef"]
    assert 25 <= raw <= 60
    assert recalibrated(study, estimate="lvef")["estimates"]["lvef"] == pytest.approx(2 * raw - 10, abs=1e-4)
    with pytest.raises(PromptSetError, match="one non-empty prompt list per value"):
        PromptSet.from_dict({"findings": {}, "estimates": {"lvef": {**words, "values": [25, 45, 60]}}})
    with pytest.raises(PromptSetError, match="slope"):
        PromptSet.from_dict({"findings": {}, "estimates": {"lvef": {**words, "calibration": {"slope": "x"}}}})


def test_estimate_calibration_is_fitted_on_measured_values(model_dir):
    """The fitted line maps the raw estimate onto the measured values it was fitted to; values that fall as the
    raw estimate rises leave the estimate uncalibrated; unmeasured studies (NaN) are ignored."""
    from cmr_clip.evaluation.zero_shot import calibrate_estimate, estimates

    model, processor = CMRCLIPModel.from_pretrained(model_dir), CMRCLIPProcessor.from_pretrained(model_dir)
    spec = {"values": [20, 40, 60], "unit": "%", "prompts": [["Severely impaired."], ["Mildly impaired."], ["Normal."]]}
    prompts = PromptSet.from_dict({"findings": {}, "estimates": {"lvef": spec}})
    videos = torch.nn.functional.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    raw = estimates(model, processor.tokenizer, videos, prompts, "lvef")
    measured = 3 * raw + 5
    measured[0] = np.nan
    fitted = calibrate_estimate(model, processor.tokenizer, videos, measured, prompts, "lvef")
    line = fitted.estimates["lvef"]["calibration"]
    assert line["slope"] == pytest.approx(3, rel=1e-3) and line["intercept"] == pytest.approx(5, abs=0.05)
    assert line["n"] == 11
    np.testing.assert_allclose(estimates(model, processor.tokenizer, videos, fitted, "lvef"), 3 * raw + 5, rtol=1e-3)
    falling = calibrate_estimate(model, processor.tokenizer, videos, -raw, fitted, "lvef")
    assert "calibration" not in falling.estimates["lvef"]


def test_lvef_is_estimated_only_when_asked(classify):
    """The zero-shot LVEF estimate correlates too weakly on the demo (Pearson r 0.41 to 0.54) to be a default
    output: a plain call answers findings only; `estimate="lvef"` adds it."""
    study = {"video_embeds": torch.randn(16, generator=torch.Generator().manual_seed(4))}
    assert not classify(study).get("estimates")
    assert set(classify(study, estimate="lvef")["estimates"]) == {"lvef"}
