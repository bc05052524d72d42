"""The rule-based finding extractor on its own: hand-written sentences, negations, grades, LV vs RV, and
agreement with the labels of synthetic impressions."""

import numpy as np
import pytest

from cmr_clip.evaluation.findings import FINDINGS, extract_diagnosis, extract_findings, findings_present, split_sentences
from cmr_clip.synthetic import DIAGNOSES, draw_subject
from cmr_clip.synthetic.reports import ef_grade, write_impression

# text -> {finding: (present, grade)} for every finding the text mentions, and nothing else
CASES = [
    # negations
    ("No LV hypertrophy.", {"lv_hypertrophy": (False, None)}),
    ("No left ventricular hypertrophy.", {"lv_hypertrophy": (False, None)}),
    ("No pericardial effusion.", {"pericardial_effusion": (False, None)}),
    ("No late gadolinium enhancement to suggest infarction.", {"lge": (False, None)}),
    ("No myocardial scar or fibrosis on LGE imaging.", {"lge": (False, None)}),
    ("There is no evidence of myocardial fibrosis.", {"lge": (False, None)}),
    ("LGE is not seen.", {"lge": (False, None)}),
    ("Late gadolinium enhancement: absent.", {"lge": (False, None)}),
    ("Without pericardial effusion.", {"pericardial_effusion": (False, None)}),
    ("No LGE, pericardial effusion or LV hypertrophy.",
     {"lge": (False, None), "pericardial_effusion": (False, None), "lv_hypertrophy": (False, None)}),
    ("The aortic root is not dilated.", {"aortic_dilation": (False, None)}),
    ("LV systolic function is not impaired.", {"lv_dysfunction": (False, None)}),
    # "normal" and "preserved" rule findings out, for the structure they name
    ("Normal RV size and systolic function.", {"rv_dilation": (False, None), "rv_dysfunction": (False, None)}),
    ("Normal LV size and systolic function (LVEF 64%).", {"lv_dilation": (False, None), "lv_dysfunction": (False, None)}),
    ("Normal biventricular size and function.", {"lv_dilation": (False, None), "lv_dysfunction": (False, None),
                                                 "rv_dilation": (False, None), "rv_dysfunction": (False, None)}),
    ("LV function is normal.", {"lv_dysfunction": (False, None)}),
    ("Left ventricle normal in size with preserved systolic function (LVEF 60%).",
     {"lv_dilation": (False, None), "lv_dysfunction": (False, None)}),
    ("Normal aortic root dimensions (31 mm).", {"aortic_dilation": (False, None)}),
    ("Normal wall thickness.", {"lv_hypertrophy": (False, None)}),
    ("Hyperdynamic LV systolic function.", {"lv_dysfunction": (False, None)}),
    ("Hyperdynamic LV systolic function (LVEF 76%).", {"lv_dysfunction": (False, None)}),
    # dilation without dysfunction, and the other way round
    ("Dilated left ventricle with preserved systolic function.", {"lv_dilation": (True, None), "lv_dysfunction": (False, None)}),
    ("Dilated right ventricle with preserved systolic function.", {"rv_dilation": (True, None), "rv_dysfunction": (False, None)}),
    ("RV dilation; RV systolic function is preserved.", {"rv_dilation": (True, None), "rv_dysfunction": (False, None)}),
    ("LV dilation with normal systolic function, LVEF 58%.", {"lv_dilation": (True, None), "lv_dysfunction": (False, None)}),
    ("Normal LV size and reduced systolic function.", {"lv_dilation": (False, None), "lv_dysfunction": (True, None)}),
    # grades, and LV vs RV
    ("Mildly reduced RV systolic function (RVEF 40%).", {"rv_dysfunction": (True, "mild")}),
    ("Moderately reduced LV systolic function (LVEF 35%).", {"lv_dysfunction": (True, "moderate")}),
    ("Left ventricular systolic function is severely impaired, with an LVEF of 22%.", {"lv_dysfunction": (True, "severe")}),
    ("Moderate LV systolic dysfunction, LVEF 35%.", {"lv_dysfunction": (True, "moderate")}),
    ("Severely dilated left ventricle with severely reduced systolic function (LVEF 20%).",
     {"lv_dilation": (True, "severe"), "lv_dysfunction": (True, "severe")}),
    ("Mildly dilated and severely impaired left ventricle.", {"lv_dilation": (True, "mild"), "lv_dysfunction": (True, "severe")}),
    ("Dilated LV with mild to moderate systolic impairment.", {"lv_dilation": (True, None)}),
    ("Dilated LV with mildly to moderately reduced systolic function.",
     {"lv_dilation": (True, None), "lv_dysfunction": (True, "mild-moderate")}),
    ("Markedly depressed left ventricular ejection fraction.", {"lv_dysfunction": (True, "severe")}),
    ("Severely dilated left ventricle with severely reduced systolic function, and normal RV size and function.",
     {"lv_dilation": (True, "severe"), "lv_dysfunction": (True, "severe"),
      "rv_dilation": (False, None), "rv_dysfunction": (False, None)}),
    ("Normal LV size and function; dilated RV with moderately impaired systolic function.",
     {"lv_dilation": (False, None), "lv_dysfunction": (False, None),
      "rv_dilation": (True, None), "rv_dysfunction": (True, "moderate")}),
    ("Severely impaired systolic function.", {"lv_dysfunction": (True, "severe")}),
    ("Enlarged right ventricle.", {"rv_dilation": (True, None)}),
    ("Right ventricular dilatation.", {"rv_dilation": (True, None)}),
    ("Small pericardial effusion.", {"pericardial_effusion": (True, "small")}),
    ("Moderate circumferential pericardial effusion (12 mm).", {"pericardial_effusion": (True, "moderate")}),
    ("Trivial pericardial effusion.", {"pericardial_effusion": (True, "trace")}),
    ("Mild concentric LV hypertrophy.", {"lv_hypertrophy": (True, "mild")}),
    ("Asymmetric septal hypertrophy with a maximal wall thickness of 21 mm.", {"lv_hypertrophy": (True, None)}),
    ("Concentric LVH.", {"lv_hypertrophy": (True, None)}),
    # LGE in its words
    ("Mid-wall late gadolinium enhancement of the septum, a non-ischemic pattern.", {"lge": (True, None)}),
    ("Subendocardial LGE in the LAD territory, consistent with prior infarction.", {"lge": (True, None)}),
    ("Inferior wall scar.", {"lge": (True, None)}),
    ("Delayed enhancement at the RV insertion points.", {"lge": (True, None)}),
    # the aorta
    ("Aneurysmal aortic root (52 mm).", {"aortic_dilation": (True, None)}),
    ("Mildly dilated ascending aorta.", {"aortic_dilation": (True, "mild")}),
    # other real-world phrasing
    ("The left ventricle is enlarged with globally depressed systolic function.",
     {"lv_dilation": (True, None), "lv_dysfunction": (True, None)}),
    ("RV is mildly dilated but has normal function.", {"rv_dilation": (True, "mild"), "rv_dysfunction": (False, None)}),
    ("Biventricular dilatation.", {"lv_dilation": (True, None), "rv_dilation": (True, None)}),
    ("Normal LV size, thickness and function.",
     {"lv_dilation": (False, None), "lv_hypertrophy": (False, None), "lv_dysfunction": (False, None)}),
    ("Normal LV cavity size; wall thickness is increased at 16 mm.",
     {"lv_dilation": (False, None), "lv_hypertrophy": (True, None)}),
    ("Mildly increased LV wall thickness.", {"lv_hypertrophy": (True, "mild")}),
    ("Reduced LVEF of 30%.", {"lv_dysfunction": (True, None)}),
    ("Patchy mid-myocardial fibrosis in the inferolateral wall.", {"lge": (True, None)}),
    ("There is a large pericardial effusion without tamponade.", {"pericardial_effusion": (True, "large")}),
    # what is not a finding of the vocabulary
    ("No regional wall motion abnormality.", {}),
    ("Increased T2 signal in the inferolateral wall.", {}),
    ("RV wall thickness is increased.", {}),
    ("LV EF 55%, RV EF 50%.", {}),
    ("Impaired diastolic function.", {}),
    ("Small left pleural effusion.", {}),
    ("Dilated left atrium.", {}),
    ("Reduced wall thickness in the infarcted segment.", {"lge": (True, None)}),
    ("LVEF 64%.", {}),
    ("Findings are consistent with dilated cardiomyopathy.", {}),
    ("Hypertrophic cardiomyopathy.", {}),
    ("Comparison: none available. Clinical correlation is recommended.", {}),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:60] for c in CASES])
def test_hand_written_sentences(text, expected):
    got = {name: (m.present, m.grade) for name, m in extract_findings(text).items()}
    assert got == expected


@pytest.mark.parametrize("text,expected", [
    ("No LGE, dilated LV.", {"lge": False, "lv_dilation": True}),
    ("No LGE but mildly dilated LV.", {"lge": False, "lv_dilation": True}),
    ("Dilated LV without LGE.", {"lge": False, "lv_dilation": True}),
    ("LV systolic function is not preserved.", {"lv_dysfunction": True}),
    ("No pericardial or pleural effusion.", {"pericardial_effusion": False}),
    ("Bilateral pleural effusions and a small pericardial effusion.", {"pericardial_effusion": True}),
])
def test_negation_scope(text, expected):
    present = findings_present(text)
    assert {name: present[name] for name in expected} == expected
    assert not any(v for name, v in present.items() if name not in expected)


@pytest.mark.parametrize("text,expected", [
    # A negation's scope ends at its sentence's stop in dictated lower-case reports too.
    ("no lge. dilated lv with severely reduced systolic function.",
     {"lge": False, "lv_dilation": True, "lv_dysfunction": True}),
    ("no pericardial effusion. moderate rv dilation.", {"pericardial_effusion": False, "rv_dilation": True}),
    ("normal lv size. no lge. moderately dilated aortic root.",
     {"lv_dilation": False, "lge": False, "aortic_dilation": True}),
])
def test_lower_case_reports_are_read_sentence_by_sentence(text, expected):
    assert {name: mention.present for name, mention in extract_findings(text).items()} == expected


def test_a_finding_stated_anywhere_is_present_and_keeps_its_grade():
    text = "No subendocardial LGE. Patchy mid-wall LGE at the RV insertion points. Moderately dilated LV. LV dilated."
    mentions = extract_findings(text)
    assert mentions["lge"].present and mentions["lge"].text == "Patchy mid-wall LGE at the RV insertion points."
    assert (mentions["lv_dilation"].present, mentions["lv_dilation"].grade) == (True, "moderate")


def test_findings_present_covers_the_vocabulary():
    present = findings_present("Dilated right ventricle. No LGE.")
    assert list(present) == list(FINDINGS)
    assert [name for name, v in present.items() if v] == ["rv_dilation"]


@pytest.mark.parametrize("text,expected", [
    ("Findings are consistent with ischemic cardiomyopathy.", "icm"),
    ("Overall, ischaemic heart disease.", "icm"),
    ("Findings are consistent with non-ischemic cardiomyopathy.", "nicm"),
    ("Findings are consistent with dilated cardiomyopathy.", "nicm"),
    ("Appearances are consistent with hypertrophic cardiomyopathy.", "hcm"),
    ("Findings are typical of cardiac amyloid infiltration.", "amyloidosis"),
    ("Normal cardiac MRI. No LGE.", "normal"),
    ("Structurally normal heart.", "normal"),
    ("No features of cardiac amyloidosis. Normal LV size.", None),
    ("Mid-wall LGE in a non-ischemic distribution.", None),
])
def test_diagnosis(text, expected):
    assert extract_diagnosis(text) == expected


def test_sentences_split_at_full_stops_and_numbered_lines():
    assert split_sentences("1. Dilated LV (LVEF 32.5%).\n2. No LGE. Small effusion.") == [
        "Dilated LV (LVEF 32.5%).", "No LGE.", "Small effusion."]


def test_a_non_string_is_refused():
    with pytest.raises(TypeError, match="expects a string, got int"):
        extract_findings(3)


def _synthetic_impressions(n: int):
    """`n` subjects and impressions written from their own parameters (no phantom imaging: fast)."""
    out = []
    for i in range(n):
        subject = draw_subject(np.random.default_rng([23, i]), DIAGNOSES[i % len(DIAGNOSES)])
        measurements = {"lvef": subject.lvef, "rvef": subject.rvef, "lvedv_ml": subject.lvedv_ml,
                        "max_wall_thickness_mm": max(subject.wall_mm, subject.septal_wall_mm)}
        out.append((subject, write_impression(subject, measurements, np.random.default_rng([29, i]))))
    return out


def test_extractor_recovers_every_label_of_synthetic_impressions():
    mismatches = []
    for subject, text in _synthetic_impressions(150):
        present = findings_present(text)
        wrong = {name: (present[name], subject.findings[name]) for name in FINDINGS if present[name] != subject.findings[name]}
        if wrong:
            mismatches.append((wrong, text))
    assert mismatches == []


def test_extractor_recovers_grades_and_diagnosis_of_synthetic_impressions():
    mismatches = []
    for subject, text in _synthetic_impressions(150):
        mentions = extract_findings(text)
        expected = {}
        if subject.findings["lv_dysfunction"]:
            expected["lv_dysfunction"] = ef_grade(subject.lvef, 50.0).removesuffix("ly")
        if subject.findings["rv_dysfunction"]:
            expected["rv_dysfunction"] = ef_grade(subject.rvef, 45.0).removesuffix("ly")
        if subject.findings["pericardial_effusion"]:
            expected["pericardial_effusion"] = "small" if subject.effusion_mm < 10 else "moderate"
        grades = {name: mentions[name].grade for name in expected}
        diagnosis = extract_diagnosis(text)
        # one of the three normal impressions states no diagnosis ("Normal left ventricular size and function...")
        if grades != expected or diagnosis not in (subject.diagnosis, None if subject.diagnosis == "normal" else "-"):
            mismatches.append((grades, expected, diagnosis, subject.diagnosis, text))
    assert mismatches == []
