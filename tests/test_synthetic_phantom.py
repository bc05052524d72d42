"""The phantom agrees with its labels: measured EF, volumes and wall thickness, LGE contrast, impressions."""

import re

import numpy as np
import pytest
from scipy import ndimage

from cmr_clip.synthetic import DIAGNOSES, FINDINGS, THRESHOLDS, Heart, Tissue, draw_subject, measure
from cmr_clip.synthetic.imaging import PlaneSampler, ir_signal, null_ti
from cmr_clip.synthetic.planning import plane_at
from cmr_clip.synthetic.reports import write_impression
from cmr_clip.synthetic.subject import draw_findings


def _label_from_measurements(m: dict, name: str) -> bool:
    return {
        "lv_dysfunction": m["lvef"] < THRESHOLDS["lvef"],
        "rv_dysfunction": m["rvef"] < THRESHOLDS["rvef"],
        "lv_dilation": m["lvedv_ml"] > THRESHOLDS["lvedv_ml"],
        "rv_dilation": m["rvedv_ml"] > THRESHOLDS["rvedv_ml"],
        "lv_hypertrophy": m["max_wall_thickness_mm"] >= THRESHOLDS["max_wall_thickness_mm"],
    }[name]


@pytest.fixture(scope="module")
def subjects():
    """Forty subjects (eight per diagnosis), their hearts and measurements."""
    out = []
    for i, diagnosis in enumerate(DIAGNOSES * 8):
        subject = draw_subject(np.random.default_rng([11, i]), diagnosis)
        heart = Heart(subject, 14)
        out.append((subject, heart, measure(heart).as_dict()))
    return out


def test_measurements_fall_on_the_labelled_side_of_each_threshold(subjects):
    for subject, heart, m in subjects:
        for name in ("lv_dysfunction", "rv_dysfunction", "lv_dilation", "rv_dilation", "lv_hypertrophy"):
            assert _label_from_measurements(m, name) == subject.findings[name], (subject.diagnosis, name, m)
        assert m["lvesv_ml"] < m["lvedv_ml"] and m["rvesv_ml"] < m["rvedv_ml"]
        assert abs(m["lvef"] - subject.lvef) < 1.5 and abs(m["rvef"] - subject.rvef) < 1.5
    seen = {name: {s.findings[name] for s, _, _ in subjects} for name in FINDINGS}
    assert all(values == {True, False} for values in seen.values()), seen


def _sax_label_maps(heart: Heart, phase: int, step: float, pixel: float, extent_mm: float, z_range):
    e_s, _, e_l = heart.axes
    n = int(extent_mm / pixel)
    for z in np.arange(*z_range, step):
        plane = plane_at(heart.origin + z * e_l + 15.0 * e_s, e_s, np.cross(e_l, e_s), n, n, pixel, 1.0)
        yield z, PlaneSampler(heart, plane).labels(phase)


@pytest.mark.parametrize("index", [0, 1, 3, 4])  # normal, ICM, HCM, amyloidosis
def test_short_axis_label_maps_give_the_measured_volumes(subjects, index):
    subject, heart, m = subjects[index]
    volumes = {}
    for phase in (heart.ed_phase, heart.es_phase):
        z_range = (heart.phases[phase].base + 1.0, heart.length_ed + 30.0)
        maps = np.stack([labels for _, labels in _sax_label_maps(heart, phase, 2.0, 1.0, 130.0, z_range)])
        volumes[phase] = [(maps == t).sum() * 2.0 / 1000.0 for t in (Tissue.LV_BLOOD, Tissue.RV_BLOOD)]
    (lvedv, rvedv), (lvesv, rvesv) = volumes[heart.ed_phase], volumes[heart.es_phase]
    assert lvedv == pytest.approx(m["lvedv_ml"], rel=0.02) and lvesv == pytest.approx(m["lvesv_ml"], rel=0.03)
    assert rvedv == pytest.approx(m["rvedv_ml"], rel=0.02) and rvesv == pytest.approx(m["rvesv_ml"], rel=0.03)
    assert 100.0 * (lvedv - lvesv) / lvedv == pytest.approx(m["lvef"], abs=1.5)


@pytest.mark.parametrize("index", [0, 3, 4, 8])  # normal, HCM (septal), amyloidosis (concentric), HCM
def test_short_axis_label_maps_give_the_measured_wall_thickness(subjects, index):
    subject, heart, m = subjects[index]
    thickest = 0.0
    for _, labels in _sax_label_maps(heart, 0, 4.0, 0.5, 130.0, (2.0, 0.5 * heart.phases[0].length)):
        myocardium = np.pad(labels == Tissue.LV_MYO, 1)  # so that a wall cut by the border is not "thick"
        inscribed = ndimage.distance_transform_edt(myocardium) * 0.5
        thickest = max(thickest, 2.0 * inscribed.max())
    assert thickest == pytest.approx(m["max_wall_thickness_mm"], abs=1.2)
    assert (thickest >= THRESHOLDS["max_wall_thickness_mm"]) == subject.findings["lv_hypertrophy"]


def _mid_sax_signals(heart: Heart, contrast):
    e_s, _, e_l = heart.axes
    plane = plane_at(heart.origin + 0.45 * heart.length_ed * e_l, e_s, np.cross(e_l, e_s), 120, 120, 1.0, 2.0)
    sampler = PlaneSampler(heart, plane)
    labels, scar = heart.labels(plane.points(), 0)
    image = sampler.image(0, contrast, blur_px=0.01) / sampler.shading
    return image.ravel(), labels, scar


def _first(subjects, predicate):
    return next((s, h) for s, h, _ in subjects if predicate(s))


def test_lge_shows_bright_scar_nulled_myocardium_and_grey_blood(subjects):
    subject, heart = _first(subjects, lambda s: s.lge_pattern == "transmural")
    ti = null_ti(1.5, amyloid=False)
    image, labels, scar = _mid_sax_signals(heart, lambda lab, sc: np.abs(ir_signal(lab, sc, ti, 1.5, False)))
    remote = (labels == Tissue.LV_MYO) & ~scar
    assert scar.sum() > 20 and remote.sum() > 20
    blood = image[labels == Tissue.LV_BLOOD].mean()
    assert image[scar].mean() > 1.4 * blood > 5.0 * image[remote].mean()


def test_amyloidosis_lge_has_a_dark_blood_pool(subjects):
    subject, heart = _first(subjects, lambda s: s.diagnosis == "amyloidosis")
    ti = null_ti(1.5, amyloid=True)
    image, labels, scar = _mid_sax_signals(heart, lambda lab, sc: np.abs(ir_signal(lab, sc, ti, 1.5, True)))
    assert image[scar].mean() > 3.0 * image[labels == Tissue.LV_BLOOD].mean()


def test_findings_follow_the_diagnosis(subjects):
    for subject, _, _ in subjects:
        f = subject.findings
        if subject.diagnosis == "normal":
            assert not any(f.values())
        if subject.diagnosis == "icm":
            assert subject.lge_pattern in ("subendocardial", "transmural") and subject.lge_territory
        if subject.diagnosis == "hcm":
            assert f["lv_hypertrophy"] and subject.septal_wall_mm > 1.5 * subject.wall_mm
        if subject.diagnosis == "amyloidosis":
            assert subject.lge_pattern == "diffuse"
        assert f["lge"] == (subject.lge_pattern is not None)
        assert f["pericardial_effusion"] == (subject.effusion_mm > 0)
        assert f["aortic_dilation"] == (subject.aortic_root_mm > THRESHOLDS["aortic_root_mm"])


# --- impressions ------------------------------------------------------------------------------------
_LV = r"\b(LV|left ventric\w*)\b"
_RV = r"\b(RV|right ventric\w*)\b"
_POSITIVE = {
    "lv_dysfunction": (_LV, r"\b(reduced|impaired|depressed|dysfunction)\b"),
    "rv_dysfunction": (_RV, r"\b(reduced|impaired|depressed|dysfunction)\b"),
    "lv_dilation": (_LV, r"\b(dilat\w*|enlarged)\b"),
    "rv_dilation": (_RV, r"\b(dilat\w*|enlarged)\b"),
    "lv_hypertrophy": (r"hypertroph", r""),
    "lge": (r"(enhancement|\bLGE\b)", r""),
    "aortic_dilation": (r"\baort", r"\b(dilat\w*|enlarged|aneurysm\w*)\b"),
    "pericardial_effusion": (r"\beffusion\b", r""),
}
_NEGATED = re.compile(r"^(\d+\.\s*)?(no|normal|without)\b", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=\.)\s+|\n", text) if s.strip()]


def mentions(text: str, finding: str) -> bool:
    """Does a sentence of the impression assert the finding (and not negate it)?"""
    subject, predicate = _POSITIVE[finding]
    for sentence in _sentences(text):
        if _NEGATED.search(sentence):
            continue
        if re.search(subject, sentence, re.IGNORECASE) and re.search(predicate, sentence, re.IGNORECASE):
            return True
    return False


def test_impressions_agree_with_labels(subjects):
    for i, (subject, _, m) in enumerate(subjects):
        for k in range(5):
            text = write_impression(subject, m, np.random.default_rng([i, k]))
            for finding in FINDINGS:
                assert mentions(text, finding) == subject.findings[finding], (finding, text)
            ef = re.search(r"LVEF (?:of )?(\d+)%", text)
            if ef:
                assert int(ef.group(1)) == round(m["lvef"])
            if subject.findings["lv_dysfunction"]:
                assert ef, text  # a reduced ejection fraction is always quantified


def test_negations_are_written(subjects):
    texts = [write_impression(s, m, np.random.default_rng(i)) for i, (s, _, m) in enumerate(subjects)]
    no_lge = [t for t, (s, _, _) in zip(texts, subjects) if not s.findings["lge"]]
    assert sum(bool(re.search(r"\bNo (late gadolinium enhancement|LGE|myocardial scar)", t)) for t in no_lge) >= 0.8 * len(no_lge)


def test_a_normal_study_reads_normal(subjects):
    for i, (subject, _, m) in enumerate(subjects):
        if subject.diagnosis != "normal":
            continue
        text = write_impression(subject, m, np.random.default_rng(i))
        assert re.search(r"\bnormal\b", text, re.IGNORECASE) and not any(mentions(text, f) for f in FINDINGS)


def test_parser_sees_findings_in_a_known_text():
    text = ("Severely dilated left ventricle with severely reduced systolic function (LVEF 22%). No LGE. "
            "Normal RV size and systolic function. Small pericardial effusion.")
    found = {f for f in FINDINGS if mentions(text, f)}
    assert found == {"lv_dilation", "lv_dysfunction", "pericardial_effusion"}


def test_bad_inputs_raise(subjects):
    with pytest.raises(ValueError, match="n_phases must be at least 4"):
        Heart(subjects[0][0], 2)
    with pytest.raises(ValueError, match="unknown diagnosis"):
        draw_findings(np.random.default_rng(0), "dcm")
