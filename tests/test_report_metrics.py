"""Report-generation metrics on known inputs: BLEU-1..4, ROUGE-L, METEOR (exact + stem), clinical accuracy,
and the `evaluate` modules that wrap them."""

import math
import sys

import evaluate
import pytest

from cmr_clip.evaluation import (
    bleu,
    clinical_accuracy,
    meteor_exact_stem,
    metric_path,
    report_generation_metrics,
    rouge_l,
)
from cmr_clip.evaluation.findings import FINDINGS
from cmr_clip.evaluation.report_metrics import tokenize

REFERENCES = [
    "Dilated LV with moderately reduced systolic function (LVEF 38%). Small pericardial effusion.",
    "No LGE. Normal LV size and systolic function. Appearances are consistent with hypertrophic cardiomyopathy.",
    "Mid-wall late gadolinium enhancement of the septum, a non-ischemic pattern.",
]
PREDICTIONS = [
    "No LV dilation. Moderately reduced LV systolic function. Small pericardial effusion.",
    "Mid-wall LGE. Dilated LV. Findings are consistent with dilated cardiomyopathy.",
    "Mid-wall late gadolinium enhancement of the septum.",
]


def test_tokens_are_lower_case_words_and_numbers():
    assert tokenize("Dilated LV (LVEF 38%).") == ["dilated", "lv", "lvef", "38"]


def test_identical_reports_score_one():
    scores = report_generation_metrics(REFERENCES, REFERENCES)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "finding_f1_micro", "finding_f1_macro",
                "diagnosis_accuracy"):
        assert scores[key] == pytest.approx(1.0), key
    # METEOR's fragmentation penalty never quite vanishes: one chunk of m words costs 0.5 / m^3
    expected = sum(1 - 0.5 / len(tokenize(r)) ** 3 for r in REFERENCES) / len(REFERENCES)
    assert scores["meteor_exact_stem"] == pytest.approx(expected)


def test_bleu_by_hand():
    # 4 predicted tokens against 5: unigrams 4/4, bigrams 2/3, trigrams 1/2, 4-grams 0/1; brevity exp(1 - 5/4)
    scores = bleu(["The LV is dilated."], ["The LV is severely dilated."])
    bp = math.exp(1 - 5 / 4)
    assert scores == pytest.approx({"bleu1": bp, "bleu2": bp * (2 / 3) ** 0.5, "bleu3": bp * (1 / 3) ** (1 / 3),
                                    "bleu4": 0.0})


def test_bleu_pools_counts_over_the_corpus():
    # the short pair has no 4-gram; the long one supplies all of them, so the corpus still scores 1
    assert bleu(["Normal cardiac MRI.", REFERENCES[1]], ["Normal cardiac MRI.", REFERENCES[1]])["bleu4"] == pytest.approx(1.0)


def test_rouge_l_by_hand():
    # longest common subsequence "the lv is dilated": precision 4/4, recall 4/5
    assert rouge_l(["The LV is dilated."], ["The LV is severely dilated."]) == pytest.approx(2 * 1 * 0.8 / 1.8)


def test_meteor_by_hand():
    # 4 matches, precision 1, recall 4/5; chunks "the lv is" and "dilated": penalty 0.5 * (2/4)^3
    fmean = 1 * 0.8 / (0.9 * 1 + 0.1 * 0.8)
    assert meteor_exact_stem(["The LV is dilated."], ["The LV is severely dilated."]) == pytest.approx(fmean * (1 - 0.0625))


def test_meteor_matches_stems_but_not_synonyms():
    same = meteor_exact_stem(["Dilated ventricle."], ["Dilated ventricle."])
    assert meteor_exact_stem(["Dilated ventricles."], ["Dilated ventricle."]) == pytest.approx(same)
    assert meteor_exact_stem(["Enlarged ventricle."], ["Dilated ventricle."]) < same


def test_clinical_accuracy_by_hand():
    scores = clinical_accuracy(PREDICTIONS, REFERENCES)
    # LV dilation: the reference states it, the prediction negates it (recall 0); the second prediction adds it
    assert scores["finding_lv_dilation_recall"] == 0.0 and scores["finding_lv_dilation_precision"] == 0.0
    assert scores["finding_lv_dilation_support"] == 1
    # LGE: found where present, and once where the reference rules it out (precision 1/2)
    assert (scores["finding_lge_precision"], scores["finding_lge_recall"]) == (0.5, 1.0)
    assert scores["finding_lge_f1"] == pytest.approx(2 / 3)
    assert (scores["finding_pericardial_effusion_f1"], scores["finding_lv_dysfunction_f1"]) == (1.0, 1.0)
    # findings no text states are undefined and left out of the macro average
    assert scores["finding_aortic_dilation_f1"] is None and scores["finding_aortic_dilation_support"] == 0
    # pooled: tp 3 (effusion, LGE, LV dysfunction), fp 2 (LV dilation, LGE), fn 1 (LV dilation)
    assert scores["finding_precision_micro"] == pytest.approx(3 / 5)
    assert scores["finding_recall_micro"] == pytest.approx(3 / 4)
    assert scores["finding_f1_micro"] == pytest.approx(6 / 9)
    assert scores["finding_f1_macro"] == pytest.approx((0 + 2 / 3 + 1 + 1) / 4)
    # the only stated reference diagnosis (hcm) is predicted as dilated cardiomyopathy
    assert scores["diagnosis_accuracy"] == 0.0


def test_a_negated_finding_is_not_reported_as_present():
    scores = clinical_accuracy(["No pericardial effusion."], ["Small pericardial effusion."])
    assert scores["finding_pericardial_effusion_recall"] == 0.0
    scores = clinical_accuracy(["Small pericardial effusion."], ["No pericardial effusion."])
    assert scores["finding_pericardial_effusion_precision"] == 0.0


def test_metric_keys_are_flat_and_documented():
    per_finding = {f"finding_{name}_{what}" for name in FINDINGS for what in ("precision", "recall", "f1", "support")}
    expected = per_finding | {"bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "meteor_exact_stem", "finding_precision_micro",
                              "finding_recall_micro", "finding_f1_micro", "finding_f1_macro", "diagnosis_accuracy",
                              "n_reports"}
    assert set(report_generation_metrics(PREDICTIONS, REFERENCES)) == expected


def test_evaluate_modules_load_by_path_and_agree_with_the_functions():
    plain = report_generation_metrics(PREDICTIONS, REFERENCES)
    assert evaluate.load(metric_path("report_generation")).compute(predictions=PREDICTIONS, references=REFERENCES) == plain
    clinical = evaluate.load(metric_path("clinical_accuracy")).compute(predictions=PREDICTIONS, references=REFERENCES)
    assert clinical == clinical_accuracy(PREDICTIONS, REFERENCES)


@pytest.mark.parametrize("metric", [bleu, rouge_l, meteor_exact_stem, clinical_accuracy, report_generation_metrics])
def test_bad_inputs_raise(metric):
    with pytest.raises(ValueError, match="2 predictions, 1 references"):
        metric(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        metric([], [])
    with pytest.raises(TypeError, match=r"references\[1\] is a NoneType"):
        metric(["a", "b"], ["a", None])
    with pytest.raises(TypeError, match="not a single string"):
        metric("a", "a")


def test_a_missing_dependency_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu.metrics", None)
    with pytest.raises(ImportError, match=r"BLEU needs sacrebleu .*cmr-clip\[report\]"):
        bleu(["a"], ["a"])
