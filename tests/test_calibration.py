"""Calibrated, coverage-aware zero-shot findings: the expected calibration error on hand-counted bins, Platt
scaling recovering the logistic map that generated the labels, calibrated probabilities monotone in the raw
score (fitted maps and through the pipeline), the prompt set's calibration block validated, and findings a
study lacks the views for answered `assessable: False` (a synthetic study without contrast, the real
Sunnybrook cine-only study) with low view coverage flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_zero_shot_support import save_random_model
from transformers import pipeline

from cmr_clip import PromptSet, read_study
from cmr_clip.evaluation.classification import expected_calibration_error
from cmr_clip.evaluation.zero_shot import fit_calibration, fit_finding
from cmr_clip.pipelines import PromptSetError
from cmr_clip.pipelines.calibration import apply
from cmr_clip.synthetic import make_cohort

SUNNYBROOK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sunnybrook" / "SCD0000301"
LGE_VIEWS = {"lge/sax", "lge/2ch", "lge/3ch", "lge/4ch"}


def logistic_sample(n: int, slope: float, intercept: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw probabilities and labels drawn with P(y=1 | raw) = sigmoid(slope * logit(raw) + intercept)."""
    rng = np.random.default_rng(seed)
    raw = 1 / (1 + np.exp(-rng.normal(0, 1.5, n)))
    truth_probability = 1 / (1 + np.exp(-(slope * np.log(raw / (1 - raw)) + intercept)))
    return raw, (rng.random(n) < truth_probability).astype(float)


def test_expected_calibration_error_on_hand_counted_bins():
    # bin [0.1, 0.2): predicted 0.1, observed 1 of 2; bin [0.9, 1.0]: predicted 0.9 and 1.0, observed 2 of 2.
    probabilities, truth = np.array([0.1, 0.1, 0.9, 1.0]), np.array([0, 1, 1, 1])
    assert expected_calibration_error(probabilities, truth) == pytest.approx((2 * 0.4 + 2 * 0.05) / 4)
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0


def test_platt_scaling_recovers_the_generating_map_and_lowers_held_out_ece():
    raw, truth = logistic_sample(20000, slope=2.0, intercept=-1.0, seed=0)
    fitted = fit_finding(raw, truth, "platt")
    assert fitted["slope"] == pytest.approx(2.0, abs=0.1) and fitted["intercept"] == pytest.approx(-1.0, abs=0.1)
    held_raw, held_truth = logistic_sample(5000, slope=2.0, intercept=-1.0, seed=1)
    for method in ("platt", "isotonic"):
        calibrated = apply(method, fit_finding(raw, truth, method), held_raw)
        assert expected_calibration_error(calibrated, held_truth) < 0.03 < expected_calibration_error(held_raw, held_truth)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrated_probabilities_are_monotone_in_the_raw_score(method):
    raw, truth = logistic_sample(400, slope=0.7, intercept=0.5, seed=2)
    grid = np.linspace(0.0, 1.0, 2001)
    calibrated = apply(method, fit_finding(raw, truth, method), grid)
    assert np.all(np.diff(calibrated) >= 0) and calibrated[-1] > calibrated[0]
    assert np.all((calibrated >= 0) & (calibrated <= 1))


def test_an_anti_correlated_finding_gets_the_prevalence_not_a_reversed_ranking():
    raw, truth = logistic_sample(2000, slope=-1.5, intercept=0.0, seed=3)
    fitted = fit_finding(raw, truth, "platt")
    assert fitted["slope"] == 0.0
    assert apply("platt", fitted, np.array([0.01, 0.99])) == pytest.approx([truth.mean()] * 2, abs=1e-6)


def test_figures_give_the_raw_auc_beside_the_calibrated_one_and_name_flat_calibrations():
    """A finding fitted on a validation split where it ran the wrong way gets a flat map: the pipeline's answers
    are then constant (AUC 0.5 on test), and the figures say so beside the ranking the raw scores give."""
    from sklearn.metrics import roc_auc_score

    from cmr_clip.evaluation.zero_shot import ZeroShotOutcome, fit_calibration, zero_shot_figures, zero_shot_table

    prompts = PromptSet.load()
    names = list(prompts.findings)[:2]  # the first runs the wrong way on validation, the second the right way
    val_raw, val_truth = logistic_sample(400, slope=3.0, intercept=0.0, seed=5)
    wrong = (1 - val_raw, val_truth)
    data = prompts.to_dict()
    data["calibration"] = fit_calibration({names[0]: wrong[0], names[1]: val_raw}, {names[0]: wrong[1], names[1]: val_truth})
    calibrated = PromptSet.from_dict(data)
    test_raw, test_truth = logistic_sample(300, slope=3.0, intercept=0.0, seed=6)
    raw_scores = {name: test_raw for name in names}
    scores = {name: apply("platt", calibrated.calibration["findings"][name], test_raw) for name in names}
    outcome = ZeroShotOutcome(calibrated, scores, raw_scores, {name: test_truth.astype(float) for name in names}, None, 300)
    figures = zero_shot_figures(outcome)
    assert figures["flat_calibration"] == [names[0]]
    assert figures["auc"][names[0]] == pytest.approx(0.5)
    assert figures["raw_auc"][names[0]] == pytest.approx(roc_auc_score(test_truth, test_raw))
    assert figures["auc"][names[1]] == pytest.approx(figures["raw_auc"][names[1]])  # a rising map keeps the ranking
    table = zero_shot_table(figures)
    assert f"| {names[0]:<20} | 0.50* |" in table and "calibration is flat" in table


def test_figures_give_each_auc_a_bootstrap_interval_as_wide_as_hanley_and_mcneil_predict():
    """The demo's AUCs carry a bootstrap 95% interval and the split's positives. Its width is checked against
    the standard error of Hanley and McNeil (Radiology 1982), an analytic formula the bootstrap does not use:
    about 2 x 1.96 SE, so a handful of positives gives an interval a few tenths wide and many positives a
    narrow one. A finding with one class in the split has no AUC and no interval."""
    from sklearn.metrics import roc_auc_score

    from cmr_clip.evaluation.zero_shot import ZeroShotOutcome, zero_shot_figures, zero_shot_table

    prompts = PromptSet.load()
    names = list(prompts.findings)[:3]
    few, few_truth = logistic_sample(60, slope=2.0, intercept=-2.0, seed=11)  # about 10 positives
    many, many_truth = logistic_sample(60 * 25, slope=2.0, intercept=-2.0, seed=12)
    scores = {names[0]: few, names[1]: many[:60], names[2]: few}
    labels = {names[0]: few_truth.astype(float), names[1]: many_truth[:60].astype(float), names[2]: np.zeros(60)}
    figures = zero_shot_figures(ZeroShotOutcome(prompts, scores, scores, labels, None, 60))
    widths = {}
    for name, (values, truth) in {names[0]: (few, few_truth), names[1]: (many[:60], many_truth[:60])}.items():
        interval = figures["auc_interval"][name]
        assert interval["positives"] == int(truth.sum()) and interval["n"] == 60
        value = roc_auc_score(truth, values)
        assert figures["auc"][name] == pytest.approx(value)
        assert interval["low"] < value < interval["high"]
        n1, n2 = int(truth.sum()), int(len(truth) - truth.sum())
        q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
        se = np.sqrt((value * (1 - value) + (n1 - 1) * (q1 - value**2) + (n2 - 1) * (q2 - value**2)) / (n1 * n2))
        widths[name] = interval["high"] - interval["low"]
        assert widths[name] == pytest.approx(2 * 1.96 * se, rel=0.35), (name, widths[name], se)
    assert figures["auc_interval"][names[2]] == {"low": None, "high": None, "positives": 0, "n": 60}
    table = zero_shot_table(figures)
    low, high = figures["auc_interval"][names[0]]["low"], figures["auc_interval"][names[0]]["high"]
    assert f"| {low:.2f}-{high:.2f} | {int(few_truth.sum())}/60 |" in table
    assert f"| {names[2]:<20} | n/a  | n/a | 0/60 |" in table

    many_figures = zero_shot_figures(ZeroShotOutcome(prompts, {names[0]: many}, {names[0]: many},
                                                     {names[0]: many_truth.astype(float)}, None, len(many)))
    interval = many_figures["auc_interval"][names[0]]
    assert interval["high"] - interval["low"] < widths[names[0]] / 3  # 25 times the studies: about 1/5 the width


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory):
    """A random model whose prompt set carries a Platt calibration fitted on logistic data, saved next to it."""
    model_dir = save_random_model(tmp_path_factory.mktemp("model"))
    raw, truth = logistic_sample(500, slope=3.0, intercept=-0.5, seed=4)
    prompts = PromptSet.load()
    labels = {name: truth for name in prompts.findings}
    data = prompts.to_dict()
    data["calibration"] = fit_calibration({name: raw for name in prompts.findings}, labels)
    PromptSet.from_dict(data).save(model_dir)
    return model_dir


def test_the_pipeline_answers_calibrated_probabilities_monotone_in_the_raw_ones(calibrated_model):
    classify = pipeline("zero-shot-cmr", model=str(calibrated_model))
    answers = classify([{"video_embeds": e} for e in torch.randn(40, 16)], findings=["lge"])
    pairs = sorted((a["findings"][0]["raw_score"], a["findings"][0]["score"]) for a in answers)
    raw, calibrated = np.array(pairs).T
    assert np.all(np.diff(calibrated) >= 0) and not np.allclose(raw, calibrated)
    saved = json.loads((calibrated_model / "zero_shot_prompts.json").read_text())["calibration"]
    expected = 1 / (1 + np.exp(-(saved["findings"]["lge"]["slope"] * np.log(raw / (1 - raw)) + saved["findings"]["lge"]["intercept"])))
    np.testing.assert_allclose(calibrated, expected, rtol=1e-4)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(version=99), "calibration version 99 is not supported"),
    (lambda c: c.update(method="beta"), "calibration method 'beta' is not one of"),
    (lambda c: c["findings"]["lge"].update(slope=-1.0), "negative slope"),
    (lambda c: c["findings"].update(unknown={"slope": 1.0, "intercept": 0.0}), "a finding the set does not have"),
])
def test_a_malformed_calibration_block_is_refused_naming_the_fix(change, message):
    data = PromptSet.load().to_dict()
    data["calibration"] = {"version": 1, "method": "platt", "fitted_on": "validation split",
                           "findings": {"lge": {"slope": 1.0, "intercept": 0.0}}}
    change(data["calibration"])
    with pytest.raises(PromptSetError, match=message):
        PromptSet.from_dict(data)


def test_an_unknown_required_view_is_refused():
    data = PromptSet.load().to_dict()
    data["findings"]["lge"]["requires_views"] = ["lge/axial"]
    with pytest.raises(PromptSetError, match=r"requires views \['lge/axial'\].*use any of"):
        PromptSet.from_dict(data)


@pytest.fixture(scope="module")
def classify(tmp_path_factory):
    return pipeline("zero-shot-cmr", model=str(save_random_model(tmp_path_factory.mktemp("plain"))))


def test_a_study_without_lge_is_not_assessable_for_lge(tmp_path, classify):
    make_cohort(tmp_path, 1, seed=21, progress=False, num_workers=1, contrast=False)
    study = str(next((tmp_path / "studies").iterdir()))
    answer = classify(study)
    by_name = {item["finding"]: item for item in answer["findings"]}
    assert by_name["lge"]["assessable"] is False and "score" not in by_name["lge"]
    assert "needs one of lge/sax" in by_name["lge"]["reason"]
    assert not LGE_VIEWS & set(answer["coverage"]["views_found"])
    assert all(item["assessable"] and 0 < item["score"] < 1 for name, item in by_name.items() if name != "lge")
    assert answer["findings"][-1]["finding"] == "lge"  # findings that cannot be judged come last
    scored = classify(study, score_unassessable=True)
    lge = next(item for item in scored["findings"] if item["finding"] == "lge")
    assert lge["assessable"] is False and 0 < lge["score"] < 1
    labels = classify(study, candidate_labels=["hcm", "normal"])
    assert sum(item["score"] for item in labels["labels"]) == pytest.approx(1.0, abs=1e-5)
    assert labels["coverage"] == answer["coverage"]


@pytest.mark.skipif(not SUNNYBROOK.is_dir(), reason="shared Sunnybrook data not available")
def test_the_real_cine_only_study_is_flagged_low_coverage(classify):
    study = read_study([*sorted((SUNNYBROOK / "cine").iterdir()), *sorted((SUNNYBROOK / "localizer").iterdir())])
    answer = classify(study)
    assert answer["coverage"]["views_found"] == ["cine/sax"] and answer["coverage"]["low"] is True
    assert any(w.startswith("low view coverage: 1 of 7 views") for w in answer["warnings"])
    by_name = {item["finding"]: item for item in answer["findings"]}
    assert by_name["lge"]["assessable"] is False and by_name["aortic_dilation"]["assessable"] is False
    assert by_name["rv_dilation"]["assessable"] is True and by_name["lv_dysfunction"]["assessable"] is True
