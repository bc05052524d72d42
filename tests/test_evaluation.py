"""Evaluation: few-shot probes on embeddings with known structure, bootstrap intervals, the bundled `evaluate`
modules offline, robustness perturbations, and `cmr-clip evaluate` end to end on a tiny corpus."""

import json
import shutil

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from sklearn.metrics import roc_auc_score
from test_zero_shot_support import FINDINGS, save_random_model, tiny_corpus

from cmr_clip.evaluation import metric_path, retrieval_metrics
from cmr_clip.evaluation.errors import EvaluationError
from cmr_clip.evaluation.few_shot import few_shot_curve
from cmr_clip.evaluation.intervals import with_interval
from cmr_clip.evaluation.regression import regression_metrics
from cmr_clip.evaluation.report import evaluate_held_out, evaluate_model
from cmr_clip.evaluation.robustness import drop_frames, shuffle_within_views, view_groups

KS = (1, 2, 4, 8, 16, 32)


def planted(n: int, dim: int = 32, strength: float = 3.5, seed: int = 0):
    """Embeddings where one direction carries a binary finding (plus a nuisance offset shared by all); the
    classes are `strength` noise standard deviations apart, so the best possible AUC is about 0.99."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    direction = np.eye(dim)[0]
    x = rng.normal(size=(n, dim)) + 4.0 * np.eye(dim)[1] + strength * labels[:, None] * direction
    return x, labels


@pytest.mark.parametrize("probe", ["prototype", "logistic"])
def test_few_shot_auc_approaches_one_for_a_planted_finding(probe):
    train_x, train_y = planted(300, seed=0)
    test_x, test_y = planted(300, seed=1)
    curve = few_shot_curve(train_x, train_y, test_x, test_y, probe=probe, ks=KS, episodes=10, seed=0)
    aucs = [curve[k]["auc"]["mean"] for k in KS]
    assert aucs[-1] > 0.97 and aucs[0] < 0.9, aucs
    assert all(later >= earlier - 0.01 for earlier, later in zip(aucs, aucs[1:])), aucs
    assert curve[32]["auc"]["low"] <= aucs[-1] <= curve[32]["auc"]["high"]
    assert curve[32]["accuracy"]["mean"] > 0.9


@pytest.mark.parametrize("probe", ["prototype", "logistic"])
def test_few_shot_stays_at_chance_for_a_random_label(probe):
    train_x, _ = planted(300, seed=0)
    test_x, _ = planted(300, seed=1)
    rng = np.random.default_rng(7)
    curve = few_shot_curve(train_x, rng.integers(0, 2, 300), test_x, rng.integers(0, 2, 300), probe=probe, ks=KS,
                           episodes=10, seed=0)
    for k in KS:
        assert abs(curve[k]["auc"]["mean"] - 0.5) < 0.08, (k, curve[k]["auc"])


def test_few_shot_leaves_out_k_beyond_the_pool_and_needs_both_test_classes():
    x, y = planted(40)
    y[:] = 0
    y[:3] = 1
    curve = few_shot_curve(x, y, x, np.r_[np.zeros(20), np.ones(20)], ks=(1, 2, 4), episodes=2)
    assert sorted(curve) == [1, 2]
    with pytest.raises(EvaluationError, match="one class"):
        few_shot_curve(x, y, x, np.zeros(40), ks=(1,), episodes=2)


def test_with_interval_brackets_the_value_and_narrows_with_more_studies():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=30), rng.normal(size=3000)
    a = with_interval(np.mean, small, resamples=300)
    b = with_interval(np.mean, large, resamples=300)
    assert a["low"] <= a["value"] <= a["high"] and b["low"] <= b["value"] <= b["high"]
    assert (b["high"] - b["low"]) < (a["high"] - a["low"]) / 5
    undefined = with_interval(lambda s, y: roc_auc_score(y, s), np.ones(5), np.ones(5), resamples=20)
    assert undefined == {"value": None, "low": None, "high": None}


def test_bundled_evaluate_modules_load_offline_and_match_the_functions(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text, video = torch.randn(12, 8), torch.randn(12, 8)
    recall = evaluate.load(metric_path("retrieval_recall")).compute(predictions=text.tolist(), references=video.tolist())
    expected = retrieval_metrics(text, video)
    assert recall.keys() == expected.keys()
    assert all(recall[key] == pytest.approx(expected[key], abs=1e-6) for key in expected)
    scores, labels = np.linspace(0, 1, 10), np.array([0, 1, 0, 0, 1, 0, 1, 1, 0, 1])
    auc = evaluate.load(metric_path("zero_shot_auc")).compute(predictions=scores, references=labels, resamples=100)
    assert auc["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert auc["auc_low"] <= auc["auc"] <= auc["auc_high"]
    with pytest.raises(FileNotFoundError, match="retrieval_recall"):
        metric_path("bleu")


def test_perturbations_shuffle_within_views_and_drop_a_quarter():
    frames = torch.arange(1, 9).repeat_interleave(4).reshape(8, 2, 2).to(torch.uint8)
    metadata = json.dumps({"frames_used": [{"entry": "cine/sax"}] * 5 + [{"entry": "lge/sax"}] * 3})
    groups = view_groups(metadata, 8)
    assert [g.tolist() for g in groups] == [[0, 1, 2, 3, 4], [5, 6, 7]]
    shuffled = shuffle_within_views(frames, groups, np.random.default_rng(3))
    assert sorted(shuffled[:5, 0, 0].tolist()) == [1, 2, 3, 4, 5] and sorted(shuffled[5:, 0, 0].tolist()) == [6, 7, 8]
    assert not torch.equal(shuffled, frames)
    dropped = drop_frames(frames, 0.25, np.random.default_rng(0))
    assert int((dropped.flatten(1) == 0).all(1).sum()) == 2
    assert [g.tolist() for g in view_groups("", 4)] == [[0, 1, 2, 3]]


def test_regression_metrics():
    truth = np.array([20.0, 40.0, 60.0, np.nan])
    figures = regression_metrics(np.array([25.0, 45.0, 65.0, 50.0]), truth)
    assert figures["mae"] == pytest.approx(5.0) and figures["pearson_r"] == pytest.approx(1.0) and figures["n"] == 3


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from cmr_clip.cli import main

    root = tmp_path_factory.mktemp("evaluate")
    model_dir = save_random_model(root / "model")
    corpus = tiny_corpus(8)
    corpus.save_to_disk(str(root / "corpus"))
    reports = root / "reports.jsonl"
    reports.write_text("".join(json.dumps({"study_id": sid, "measurements": {"lvef": 30.0 + 5 * i}}) + "\n"
                               for i, sid in enumerate(corpus["test"]["study_id"])))
    assert main(["evaluate", "--model", str(model_dir), "--data", str(root / "corpus"), "--out", str(root / "out"),
                 "--reports", str(reports), "--episodes", "3", "--shots", "1", "2", "--bootstrap", "50",
                 "--save-thresholds", "--dtype", "float32"]) == 0  # as evaluate_held_out's default
    return root


def test_evaluate_writes_metrics_with_intervals_summary_and_plots(evaluated):
    out = evaluated / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(FINDINGS) <= set(metrics["zero_shot"]["auc"])
    for name in FINDINGS:
        figure = metrics["zero_shot"]["auc"][name]
        assert figure["low"] <= figure["value"] <= figure["high"] and figure["n"] == 8
    assert metrics["zero_shot"]["lvef_estimate"]["n"] == 8 and "low" in metrics["zero_shot"]["lvef_estimate"]["mae"]
    assert set(metrics["few_shot"]) == {"prototype", "logistic"}
    assert set(metrics["few_shot"]["prototype"]["lge"]) == {"1", "2"}
    r5 = metrics["retrieval"]["text_to_study_R@5"]
    assert r5["low"] <= r5["value"] <= r5["high"]
    assert set(metrics["slices"]["vendor"]) == {"siemens", "ge"} and set(metrics["slices"]["field_strength"]) == {"1.5", "3.0"}
    assert all(-1.0 <= metrics["robustness"][name]["value"] <= 1.0 + 1e-6 for name in ("shuffle", "drop"))
    summary = (out / "summary.md").read_text()
    assert "## Zero-shot" in summary and "Youden" in summary.replace("youden", "Youden")
    assert "| finding | ECE raw | ECE calibrated" in summary
    for name in FINDINGS:  # the test split's ECE before and after the validation split's calibration
        ece = metrics["zero_shot"]["ece"][name]
        assert 0 <= ece["raw"] <= 1 and 0 <= ece["calibrated"] <= 1 and ece["n"] == 8
    for png in ("zero_shot_roc.png", "zero_shot_reliability.png", "few_shot.png", "retrieval_recall.png",
                "zero_shot_auc_slices.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_thresholds_reach_the_pipeline(evaluated):
    from transformers import pipeline

    saved = json.loads((evaluated / "model" / "zero_shot_prompts.json").read_text())
    assert "youden" in saved["thresholds"]["rule"] and set(FINDINGS) <= set(saved["thresholds"])
    assert saved["calibration"]["version"] == 1 and set(FINDINGS) <= set(saved["calibration"]["findings"])
    answer = pipeline("zero-shot-cmr", model=str(evaluated / "model"))({"video_embeds": torch.randn(16)})
    called = {item["finding"]: item for item in answer["findings"] if "present" in item}
    assert set(called) == set(FINDINGS)
    assert all(item["present"] == (item["score"] >= item["threshold"]) for item in called.values())
    assert all("raw_score" in item for item in called.values())  # the scores called are the calibrated ones


def test_the_demo_and_evaluate_model_take_their_figures_from_one_zero_shot_pass(evaluated, tmp_path):
    model_dir = shutil.copytree(evaluated / "model", tmp_path / "model")
    metrics = json.loads((evaluated / "out" / "metrics.json").read_text())
    held_out = evaluate_held_out(model_dir, load_from_disk(str(evaluated / "corpus")), reports=evaluated / "reports.jsonl")
    zero_shot = held_out["test_zero_shot"]
    assert zero_shot["thresholds"] == pytest.approx(metrics["zero_shot"]["thresholds"], abs=1e-5)
    for name, figure in metrics["zero_shot"]["auc"].items():
        assert zero_shot["auc"][name] == pytest.approx(figure["value"], abs=1e-6)
    lvef = metrics["zero_shot"]["lvef_estimate"]
    assert zero_shot["lvef_estimate"]["mae"] == pytest.approx(lvef["mae"]["value"], abs=1e-4)
    assert zero_shot["lvef_estimate"]["n"] == lvef["n"] == 8
    for key in ("text_to_study_R@1", "text_to_study_R@5", "study_to_text_median_rank"):
        assert held_out["test_retrieval"][key] == pytest.approx(metrics["retrieval"][key]["value"])
    # 8 test studies in a projection wider than 8: at most 7 directions once centred
    assert set(held_out["test_effective_rank"]) == {"video", "text"}
    assert all(1.0 <= rank <= 7.0 for rank in held_out["test_effective_rank"].values()), held_out["test_effective_rank"]


def test_evaluate_and_the_demo_can_mine_their_prompts_from_the_training_impressions(evaluated, tmp_path):
    from cmr_clip.cli import main
    from cmr_clip.pipelines.prompts import model_prompt_set

    model_dir = shutil.copytree(evaluated / "model", tmp_path / "model")
    # The tiny corpus's impressions as two sentences each: "Dilated lv." or "Normal lv size.", and
    # "Late gadolinium enhancement." or "No lge.", each said by 4 of the 8 training studies.
    corpus = load_from_disk(str(evaluated / "corpus")).map(
        lambda row: {"impression": ". ".join(part.strip().capitalize() for part in row["impression"].split(" .") if part.strip()) + "."})
    corpus.save_to_disk(str(tmp_path / "corpus"))
    assert main(["evaluate", "--model", str(model_dir), "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "out"),
                 "--episodes", "2", "--shots", "1", "--bootstrap", "20", "--no-plots", "--save-thresholds",
                 "--mine-prompts", "--dtype", "float32"]) == 0
    saved = json.loads((model_dir / "zero_shot_prompts.json").read_text())
    assert saved["name"] == "cmr-clip-default, mined" and "8 training impressions" in saved["description"]
    default = model_prompt_set(None).findings
    assert saved["findings"]["lv_dilation"] == {"positive": ["Dilated lv."], "negative": ["Normal lv size."]}
    assert saved["findings"]["lge"] == {**default["lge"], "positive": ["Late gadolinium enhancement."],
                                        "negative": ["No lge."]}  # its required views kept
    assert saved["findings"]["lv_hypertrophy"] == default["lv_hypertrophy"]  # never mentioned
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    again = shutil.copytree(evaluated / "model", tmp_path / "again")
    held_out = evaluate_held_out(again, load_from_disk(str(tmp_path / "corpus")), mine_prompts=True)
    for name, figure in metrics["zero_shot"]["auc"].items():
        assert held_out["test_zero_shot"]["auc"][name] == pytest.approx(figure["value"], abs=1e-6)
    assert json.loads((again / "zero_shot_prompts.json").read_text())["findings"] == saved["findings"]


def test_evaluate_model_names_the_fix_for_a_folder_that_is_not_a_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a prepared corpus .*cmr-clip prepare"):
        evaluate_model(tmp_path, tmp_path, tmp_path / "out", plots=False, progress=False)
