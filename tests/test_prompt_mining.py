"""Prompts mined from a corpus's impressions: numbers removed, one-finding sentences, most frequent first, and the
base set's prompts kept where the corpus says nothing. The impressions here are written in a style our synthetic
reports do not use (US and UK spellings, "LVH", "no evidence of", measurements after a dash)."""

import pytest

from cmr_clip.evaluation.prompt_mining import mine_prompt_set, mined_sentences, without_numbers
from cmr_clip.pipelines.prompts import PromptSet


@pytest.mark.parametrize("sentence,expected", [
    ("Severely reduced LV systolic function (EF 22%).", "Severely reduced LV systolic function."),
    ("Concentric LVH, max septal thickness 17mm.", "Concentric LVH."),
    ("No pericardial effusion", "No pericardial effusion."),
    # Where a number is left, measurements introduced by a word go, the rest of the sentence stays.
    ("Ascending aorta dilated, measuring 4.6 cm at the PA bifurcation.", "Ascending aorta dilated."),
    ("Ectatic aortic root measuring 44mm at the sinuses.", "Ectatic aortic root at the sinuses."),
    ("Septal hypertrophy measuring up to 21 mm.", "Septal hypertrophy."),
    ("RV dilated with an RVEDVi of 140 ml/m2 and preserved function.", None),  # not a unit the rule knows
    ("Aortic root ectasia - 44 mm at the sinuses", None),  # a number the rules cannot cut out
    ("LVEF 64%.", None),
    ("(EF 55%)", None),
])
def test_numbers_are_removed_or_the_sentence_is_not_used(sentence, expected):
    assert without_numbers(sentence) == expected


IMPRESSIONS = (
    ["Concentric LVH, max septal thickness 17mm. No evidence of pericardial effusion."] * 3
    + ["Concentric LVH, max septal thickness 19mm. Small pericardial effusion (6 mm)."] * 2
    + ["No LV hypertrophy. No evidence of pericardial effusion. Dilated LV with globally depressed function."] * 4
    + ["Left ventricular hypertrophy with late gadolinium enhancement."]  # said once, and two findings
    + ["Basal septal hypertrophy."] * 2
)
BASE = PromptSet.from_dict({
    "name": "base",
    "findings": {
        "lv_hypertrophy": {"positive": ["LVH."], "negative": ["No LVH."]},
        "pericardial_effusion": {"positive": ["Effusion."], "negative": ["No effusion."]},
        "lge": {"positive": ["LGE."], "negative": ["No LGE."], "requires_views": ["lge/sax"]},
    },
    "diseases": {"hcm": ["Hypertrophic cardiomyopathy."]},
    "thresholds": {"lge": 0.4},
})


def test_each_side_takes_the_most_frequent_one_finding_sentences():
    mined = mined_sentences(IMPRESSIONS)
    assert mined["lv_hypertrophy"]["positive"] == [("Concentric LVH.", 5), ("Basal septal hypertrophy.", 2)]
    assert mined["lv_hypertrophy"]["negative"] == [("No LV hypertrophy.", 4)]
    assert mined["pericardial_effusion"] == {"positive": [("Small pericardial effusion.", 2)],
                                             "negative": [("No evidence of pericardial effusion.", 7)]}
    # Two findings in one sentence are not a prompt for either; neither is a sentence said once.
    assert "Dilated LV with globally depressed function." not in str(mined)
    assert "late gadolinium" not in str(mined)
    assert mined_sentences(IMPRESSIONS, min_count=3)["lv_hypertrophy"]["positive"] == [("Concentric LVH.", 5)]


def test_a_measured_sentence_counts_with_its_unmeasured_twin():
    impressions = ["Aortic root ectasia measuring 44mm."] * 2 + ["Aortic root ectasia measuring 47 mm.", "Aortic root ectasia."]
    assert mined_sentences(impressions)["aortic_dilation"]["positive"] == [("Aortic root ectasia.", 4)]


def test_the_mined_set_keeps_the_base_where_the_corpus_is_silent():
    mined = mine_prompt_set(IMPRESSIONS, BASE, per_side=1)
    assert mined.findings["lv_hypertrophy"] == {"positive": ["Concentric LVH."], "negative": ["No LV hypertrophy."]}
    assert mined.findings["lge"] == BASE.findings["lge"]  # never stated alone at least twice
    assert mined.required_views("lge") == ["lge/sax"] and mined.diseases == BASE.diseases
    assert mined.thresholds == {} and mined.calibration is None  # fitted on other prompts
    assert "12 training impressions" in mined.description and "lge positive, lge negative" in mined.description
    assert mine_prompt_set(IMPRESSIONS, BASE).findings["lv_hypertrophy"]["positive"] == ["Concentric LVH.",
                                                                                          "Basal septal hypertrophy."]
    with pytest.raises(ValueError, match="per_side"):
        mine_prompt_set(IMPRESSIONS, BASE, per_side=0)


def test_a_mined_finding_keeps_how_its_prompts_are_matched():
    base = PromptSet.from_dict({**BASE.to_dict(), "findings": {
        **BASE.findings, "lv_hypertrophy": {**BASE.findings["lv_hypertrophy"], "match": "any"}}})
    mined = mine_prompt_set(IMPRESSIONS, base)
    assert mined.findings["lv_hypertrophy"]["positive"] == ["Concentric LVH.", "Basal septal hypertrophy."]
    assert mined.match("lv_hypertrophy") == "any" and mined.match("pericardial_effusion") == "ensemble"
