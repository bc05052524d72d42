"""Impressions written from the labels, with the varied phrasing of real cardiac MRI reports.

Each finding that is present gets a sentence naming it (with a grade and, for function, the measured
ejection fraction); absent findings are negated explicitly, folded into a "normal" sentence, or left
unsaid, as readers do. Sentences never mix the left and right ventricle, so a reader (or a test) can
tell which ventricle a grade belongs to. Some impressions carry boilerplate that says nothing about
the heart.
"""

from __future__ import annotations

import numpy as np

from .subject import Subject

_TERRITORY = {
    "lad": ("anterior wall and anteroseptum", "LAD territory"),
    "lcx": ("inferolateral wall", "circumflex territory"),
    "rca": ("inferior wall and inferoseptum", "RCA territory"),
}
_BOILERPLATE = (
    "Comparison: none available.",
    "Clinical correlation is recommended.",
    "Images were reviewed on a dedicated post-processing workstation.",
    "Preliminary results were communicated to the referring team.",
    "Please refer to the full report for quantitative values.",
    "Study quality: diagnostic.",
)


def ef_grade(ef: float, threshold: float) -> str:
    """'mildly', 'moderately' or 'severely' for an ejection fraction below `threshold` (%)."""
    if ef >= threshold - 10:
        return "mildly"
    if ef >= threshold - 20:
        return "moderately"
    return "severely"


def _size_grade(edv: float, threshold: float) -> str:
    if edv < threshold * 1.25:
        return "mildly"
    if edv < threshold * 1.45:
        return "moderately"
    return "severely"


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _lv_sentence(rng, f: dict, m: dict) -> str | None:
    ef = round(m["lvef"])
    if f["lv_dysfunction"]:
        g = ef_grade(m["lvef"], 50.0)
        if f["lv_dilation"]:
            size = _size_grade(m["lvedv_ml"], 200.0)
            return _pick(rng, (f"{size.capitalize()} dilated left ventricle with {g} reduced systolic function (LVEF {ef}%).",
                               f"Dilated LV with {g} impaired systolic function, LVEF {ef}%."))
        return _pick(rng, (f"{g.capitalize()} reduced LV systolic function (LVEF {ef}%).",
                           f"Left ventricular systolic function is {g} impaired, with an LVEF of {ef}%.",
                           f"{g.capitalize()} impaired left ventricular systolic function, LVEF {ef}%."))
    if f["lv_dilation"]:
        return _pick(rng, (f"Dilated left ventricle with preserved systolic function (LVEF {ef}%).",
                           f"LV dilation with normal systolic function, LVEF {ef}%."))
    if ef >= 72:
        return f"Hyperdynamic LV systolic function (LVEF {ef}%)."
    return _pick(rng, (f"Normal LV size and systolic function (LVEF {ef}%).",
                       f"Normal left ventricular size and function, LVEF {ef}%.",
                       f"Left ventricle normal in size with preserved systolic function (LVEF {ef}%)."))


def _rv_sentence(rng, f: dict, m: dict) -> str | None:
    if f["rv_dysfunction"]:
        g = ef_grade(m["rvef"], 45.0)
        dilated = "Dilated right ventricle with " if f["rv_dilation"] else ""
        first = f"{dilated}{g} reduced" if dilated else f"{g.capitalize()} reduced"
        return _pick(rng, (f"{first} RV systolic function (RVEF {round(m['rvef'])}%).",
                           f"{first} right ventricular systolic function."))
    if f["rv_dilation"]:
        return _pick(rng, ("Dilated right ventricle with preserved systolic function.",
                           "RV dilation; RV systolic function is preserved."))
    return _pick(rng, ("Normal RV size and systolic function.", "Normal right ventricular size and function.", None))


def _hypertrophy_sentence(rng, s: Subject, f: dict, m: dict) -> str | None:
    wall = round(m["max_wall_thickness_mm"])
    if not f["lv_hypertrophy"]:
        return _pick(rng, ("No left ventricular hypertrophy.", None, None))
    if s.septal_wall_mm > s.wall_mm * 1.3:
        return _pick(rng, (f"Asymmetric septal hypertrophy with a maximal wall thickness of {wall} mm.",
                           f"Asymmetric hypertrophy of the interventricular septum measuring up to {wall} mm."))
    return _pick(rng, (f"Concentric left ventricular hypertrophy (maximal wall thickness {wall} mm).",
                       f"Concentric LV hypertrophy, maximal wall thickness {wall} mm."))


def _lge_sentence(rng, s: Subject) -> str:
    pattern = s.lge_pattern
    if pattern is None:
        return _pick(rng, ("No late gadolinium enhancement.", "No myocardial scar or fibrosis on LGE imaging.",
                           "No LGE to suggest infarction or fibrosis."))
    if pattern in ("subendocardial", "transmural"):
        walls, territory = _TERRITORY[s.lge_territory]
        if pattern == "transmural":
            return f"Transmural late gadolinium enhancement of the {walls} ({territory}), consistent with a non-viable infarct."
        pct = "less than 50%" if s.lge_transmurality < 0.5 else "50-75%"
        return f"Subendocardial late gadolinium enhancement ({pct} transmural) of the {walls} in the {territory}, consistent with prior infarction."
    if pattern == "midwall":
        return _pick(rng, ("Mid-wall late gadolinium enhancement of the septum, a non-ischemic pattern.",
                           "Linear mid-wall septal LGE in a non-ischemic distribution."))
    if pattern == "insertion":
        return "Patchy mid-wall late gadolinium enhancement at the RV insertion points."
    return ("Diffuse subendocardial late gadolinium enhancement with difficulty nulling the myocardium and a dark "
            "blood pool.")


def _aorta_sentence(rng, s: Subject, f: dict) -> str | None:
    d = round(s.aortic_root_mm)
    if f["aortic_dilation"]:
        return _pick(rng, (f"Dilated aortic root measuring {d} mm.", f"Aortic root dilation ({d} mm)."))
    return _pick(rng, (f"Normal aortic root dimensions ({d} mm).", None, None, None))


def _effusion_sentence(rng, s: Subject, f: dict) -> str | None:
    if f["pericardial_effusion"]:
        size = "Small" if s.effusion_mm < 10 else "Moderate"
        return _pick(rng, (f"{size} pericardial effusion.", f"{size} circumferential pericardial effusion ({round(s.effusion_mm)} mm)."))
    return _pick(rng, ("No pericardial effusion.", None))


def _summary_sentence(rng, s: Subject, f: dict) -> str | None:
    if s.diagnosis == "icm":
        return _pick(rng, ("Findings are consistent with ischemic cardiomyopathy.", "Overall, ischemic heart disease."))
    if s.diagnosis == "nicm":
        kind = "dilated cardiomyopathy" if f["lv_dilation"] else "non-ischemic cardiomyopathy"
        return f"Findings are consistent with {kind}."
    if s.diagnosis == "hcm":
        return _pick(rng, ("Appearances are consistent with hypertrophic cardiomyopathy.", "Hypertrophic cardiomyopathy."))
    if s.diagnosis == "amyloidosis":
        return _pick(rng, ("Appearances are highly suggestive of cardiac amyloidosis.",
                           "Findings are typical of cardiac amyloid infiltration."))
    return None


def _normal_impression(rng, s: Subject, m: dict) -> list[str]:
    ef = round(m["lvef"])
    return [_pick(rng, (
        f"Normal cardiac MRI. Normal biventricular size and systolic function (LVEF {ef}%). No late gadolinium enhancement.",
        f"Normal left ventricular size and function, LVEF {ef}%. Normal right ventricular size and function. "
        "No myocardial scar or fibrosis on LGE imaging. No pericardial effusion.",
        f"Structurally normal heart. Normal biventricular systolic function, LVEF {ef}%. No LGE. No pericardial effusion.",
    ))]


def write_impression(subject: Subject, measurements: dict, rng: np.random.Generator) -> str:
    """The impression of one study, from its subject's findings and the phantom's measurements."""
    f = subject.findings
    if subject.diagnosis == "normal" and not any(f.values()):
        sentences = _normal_impression(rng, subject, measurements)
    else:
        middle = [
            _hypertrophy_sentence(rng, subject, f, measurements),
            _rv_sentence(rng, f, measurements),
            _lge_sentence(rng, subject),
            _aorta_sentence(rng, subject, f),
            _effusion_sentence(rng, subject, f),
        ]
        if rng.random() < 0.3:
            middle = [middle[i] for i in rng.permutation(len(middle))]
        sentences = [_lv_sentence(rng, f, measurements), *middle, _summary_sentence(rng, subject, f)]
    if rng.random() < 0.3:
        sentences.append(_pick(rng, _BOILERPLATE))
    numbered = rng.random() < 0.25
    sentences = [s for s in sentences if s]
    if numbered:
        return "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, 1))
    return " ".join(sentences)
