"""Every sequence of a cardiac protocol that is neither cine nor LGE is recognised and set aside, with its reason.

Two independent sources of expectations: the generator's truth record (what it rendered, written in each
vendor's style, with and without descriptions, its acquisition parameters drawn from physics rather than
from the classifier's thresholds), and tables written here of series descriptions as sites name them and of
acquisition headers from the DICOM standard's vocabulary, none of them produced by our generator.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from pydicom.uid import MRImageStorage, SecondaryCaptureImageStorage

from cmr_clip.processing import CMRStudyProcessor, StudyLayout, read_study, select_frames
from cmr_clip.processing.classification import classify_sequence
from cmr_clip.processing.grouping import series_from_frames
from cmr_clip.processing.headers import Frame
from cmr_clip.processing.sources import FileRef
from cmr_clip.synthetic import make_cohort

VENDORS = ("siemens", "ge", "philips")
# The generator's truth roles of the series to set aside, and the role the classifier must give each.
SET_ASIDE = {"t2w": "t2w", "t2star": "t2star", "perfusion": "perfusion", "tagging": "tagging",
             "flow_magnitude": "flow", "flow_phase": "flow"}
# What the reasons must name for each role (case-insensitive), so a user sees what the series is.
REASON_WORDS = {"t2w": ("t2", "stir", "spin-echo", "spin echo", "tse", "black", "dark"), "t2star": ("t2*", "multi-echo"),
                "perfusion": ("perfusion", "perf"), "tagging": ("tag", "spamm", "grid"),
                "flow": ("phase-contrast", "phase contrast", "flow", "velocity", "venc")}


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def _make_enhanced_philips(out: Path, blank: bool) -> tuple[Path, dict]:
    """A Philips study whose cine-like series (cine, tagging, flow) came out as enhanced multi-frame files (the
    generator draws that style per study): the first seed that gives one, so no test leans on a seed's draw."""
    for seed in range(40):
        folder, truth = _make(out / str(seed), "philips", seed, blank)
        if any(f["frame"] is not None and f["role"] == "cine" for f in truth["frames"]):
            return folder, truth
    raise AssertionError("no seed below 40 gave a Philips enhanced multi-frame study")


def _make(out: Path, vendor: str, seed: int, blank: bool, contrast: bool = True) -> tuple[Path, dict]:
    make_cohort(out, 1, seed=seed, vendors=[vendor], progress=False, num_workers=1, blank_descriptions=blank,
                extra_series="all", contrast=contrast)
    truth = json.loads(next((out / "truth").glob("*.json")).read_text())
    return out / "studies" / truth["study_id"], truth


@pytest.fixture(scope="module")
def extras(tmp_path_factory):
    """{(vendor, blank): (folder, truth, study)} for studies holding every extra series."""
    root = tmp_path_factory.mktemp("extras")
    made = {}
    for vendor in VENDORS:
        for blank in (False, True):
            if vendor == "philips":
                folder, truth = _make_enhanced_philips(root / f"{vendor}-{blank}", blank)
            else:
                folder, truth = _make(root / f"{vendor}-{blank}", vendor, 7, blank)
            made[vendor, blank] = (folder, truth, _quiet(read_study, folder))
    return made


@pytest.fixture(scope="module")
def without_contrast(tmp_path_factory):
    root = tmp_path_factory.mktemp("no-contrast")
    made = {}
    for vendor in VENDORS:
        folder, truth = _make(root / vendor, vendor, 11, blank=vendor == "ge", contrast=False)
        made[vendor] = (folder, truth, _quiet(read_study, folder))
    return made


def _truth_roles(truth: dict) -> dict:
    return {(f["path"], f["frame"]): f["role"] for f in truth["frames"]}


def _series_by_truth_role(study, truth: dict) -> dict:
    """{truth role: [series holding frames of that role]}; a series must not mix roles."""
    roles = _truth_roles(truth)
    found: dict = {}
    for series in study.series:
        mixed = {roles[(f.file.name, f.frame_index)] for f in series.frames}
        assert len(mixed) == 1, f"series {series.series_number} mixes {mixed}"
        found.setdefault(mixed.pop(), []).append(series)
    return found


def test_generator_writes_every_extra_series_in_every_vendor_style(extras):
    for (vendor, blank), (_, truth, _) in extras.items():
        roles = {f["role"] for f in truth["frames"]}
        assert set(SET_ASIDE) <= roles and {"cine", "lge"} <= roles, (vendor, blank)
        perfusion = [f for f in truth["frames"] if f["role"] == "perfusion"]
        assert len({f["slice"] for f in perfusion}) in (3, 4) and len({f["phase"] for f in perfusion}) >= 40
        assert all(f["sequence"] == "other" for f in truth["frames"] if f["role"] in SET_ASIDE)
    philips = [truth for (vendor, _), (_, truth, _) in extras.items() if vendor == "philips"]
    enhanced = {f["role"] for t in philips for f in t["frames"] if f["frame"] is not None}
    assert {"tagging", "flow_magnitude", "flow_phase"} <= enhanced  # Philips enhanced multi-frame style


@pytest.mark.parametrize("blank", [False, True], ids=["descriptions", "blank-descriptions"])
@pytest.mark.parametrize("vendor", VENDORS)
def test_each_extra_series_is_set_aside_with_a_reason_naming_it(extras, vendor, blank):
    _, truth, study = extras[vendor, blank]
    by_role = _series_by_truth_role(study, truth)
    for truth_role, role in SET_ASIDE.items():
        assert by_role.get(truth_role), f"{truth_role} missing from the study"
        for series in by_role[truth_role]:
            assert (series.sequence, series.view, series.role) == ("other", "other", role), (truth_role, series.reasons)
            evidence = " ".join(r for r in series.reasons if r.startswith(f"{role} +")).lower()
            assert any(word in evidence for word in REASON_WORDS[role]), (truth_role, series.reasons)
    for truth_role in ("cine", "lge"):
        assert all(s.sequence == truth_role for s in by_role[truth_role] if s.role != "repeat_discarded")


def _slot_sources(study, truth: dict, layout: StudyLayout) -> list[tuple[str, str]]:
    """(layout entry, truth role of the frame) for every non-zero frame the layout selects."""
    roles = _truth_roles(truth)
    selection = select_frames(study, layout)
    return [(item.entry, roles[(item.frame.file.name, item.frame.frame_index)]) for item in selection.frames if item]


@pytest.mark.parametrize("layout", [StudyLayout.reference(), StudyLayout.default()], ids=["reference", "default"])
def test_every_cine_and_lge_slot_holds_a_true_cine_or_lge_frame(extras, without_contrast, layout):
    studies = [(truth, study) for _, truth, study in extras.values()]
    studies += [(truth, study) for _, truth, study in without_contrast.values()]
    for truth, study in studies:
        sources = _slot_sources(study, truth, layout)
        assert sources
        for entry, role in sources:
            expected = ("cine",) if entry.startswith("cine/") else ("lge", "lge_psir")
            assert role in expected, (truth["vendor"], entry, role)


def test_study_without_contrast_reports_its_lge_views_missing(without_contrast):
    processor = CMRStudyProcessor()
    lge_views = {entry.key for entry in processor.study_layout.entries if entry.sequence == "lge"}
    assert lge_views
    for vendor, (folder, truth, study) in without_contrast.items():
        assert {f["role"] for f in truth["frames"]} & {"lge", "lge_psir", "ti_scout", "perfusion"} == set()
        assert not any(s.sequence == "lge" for s in study.series), vendor
        meta = _quiet(processor, str(folder))["study_metadata"][0]
        assert lge_views <= set(meta["missing_views"]), (vendor, meta["missing_views"])
        assert any("lge/sax" in w for w in meta["warnings"]), meta["warnings"]
        assert not any(item["entry"].startswith("lge/") for item in meta["frames_used"])
        assert {"cine/sax", "cine/4ch"} <= {item["entry"] for item in meta["frames_used"]}


# --- tables not written by our generator ---------------------------------------------------------------------


def _series(description: str = "", n_slices: int = 1, n_phases: int = 1, **headers):
    """A classified series of `n_slices` x `n_phases` frames carrying `headers` (Frame fields)."""
    per_frame = {key: headers.pop(key) for key in ("trigger_times", "inversion_times", "echo_times") if key in headers}
    fields = dict(series_instance_uid="1.2.826.0.1.3680043.2.1", series_number=9, description=description,
                  protocol_name="", sequence_name="", scanning_sequence="", sequence_variant="",
                  image_type=("ORIGINAL", "PRIMARY", "M"), sop_class_uid=MRImageStorage, manufacturer="",
                  pixel_spacing=(1.4, 1.4), rows=192, columns=192, slice_location=None, temporal_index=None,
                  cardiac_images=None, acquisition_time=None, series_time=None, transfer_syntax="", complex_component="",
                  rescale_slope=1.0, rescale_intercept=0.0, photometric="MONOCHROME2", trigger_time=None,
                  inversion_time=None, echo_time=None)
    fields.update(headers)
    frames = []
    for s in range(n_slices):
        for p in range(n_phases):
            timing = {key[:-1]: values[p] for key, values in per_frame.items()}
            frames.append(Frame(file=FileRef(f"f{s}-{p}", ""), frame_index=None, instance_number=s * n_phases + p + 1,
                                position=(0.0, 0.0, 8.0 * s), orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                                **{**fields, **timing}))
    series = series_from_frames(frames)
    classify_sequence(series)
    return series


# Series descriptions as sites and vendors' product protocols write them (none is in our generator).
SITE_NAMES = [
    ("t2w", ["T2 STIR SAX", "t2_tirm_sa_dark-blood", "STIR_SA_BH", "T2W-TSE-BB SA", "BB-T2-SPAIR_SA", "Dark Blood T2 FS",
             "DIR FSE SA", "T2 FSE-XL DB 4CH", "T2W_BB_TSE_SA", "Black blood T2 edema", "tse_db_sax", "SAX T2-W TSE"]),
    ("t2star", ["T2* SA 8 echoes", "T2star_mid_sax", "GRE-ME T2STAR", "Multi-echo GRE T2*", "T2*_BH_SAX_8TE", "t2s_mid"]),
    ("perfusion", ["Perfusion_Stress", "REST_PERF_SA", "first pass perfusion", "SR_FGRE rest", "tfl_perf_stress_moco",
                   "FPP adenosine"]),
    ("tagging", ["Tagging SA", "cine_tag_4ch", "SPAMM grid", "CSPAMM_SA", "grid_tag_mid", "TAG SA BASE"]),
    ("flow", ["Flow AAo venc 250", "qflow_PA", "PC_Ao_throughplane", "FLOW_Ao_v150", "Phase Contrast Aorta",
              "2D PC AAo", "MPA_flow_VENC150_P"]),
    ("map", ["MOLLI 5(3)3", "ShMOLLI_SA", "SASHA T1 SAX", "T1 map post", "T2 map SA", "ECV map", "T2MAP_FLASH"]),
    ("angio", ["MRA thoracic aorta", "ce_MRA_aorta", "3D whole heart", "coronary MRA", "MIP aorta", "TOF pulmonary veins"]),
    ("reformat", ["MPR", "Reformat 3ch"]),
    ("secondary", ["Screen Save", "Argus report", "cvi42 screenshot"]),
]


@pytest.mark.parametrize("role,descriptions", SITE_NAMES, ids=[r for r, _ in SITE_NAMES])
def test_site_naming_of_series_to_set_aside(role, descriptions):
    for description in descriptions:
        series = _series(description)
        assert (series.role, series.sequence) == (role, "other"), (description, series.reasons)
        assert any(r.startswith(f"{role} +") and "description" in r for r in series.reasons), series.reasons


def test_naming_of_another_contrast_wins_over_cine_timing():
    """A tagged or flow cine has cine timing; naming it is enough to keep it out of the cine slots."""
    cycle = [float(t) for t in range(0, 750, 30)]
    for description, role in [("Cine tagging SA", "tagging"), ("cine PC Ao venc 200", "flow"), ("T2* cine", "t2star")]:
        series = _series(description, n_phases=len(cycle), trigger_times=cycle, scanning_sequence="GR")
        assert (series.role, series.sequence) == (role, "other"), (description, series.reasons)
        assert any(r.startswith("cine +3") for r in series.reasons)
        assert any(r.startswith(f"set aside as {role}") for r in series.reasons), series.reasons


# Blank descriptions: the DICOM acquisition attributes alone (values from the standard and the MR literature:
# STIR nulls fat, T1 ~260 ms at 1.5 T -> TI ~150-180 ms; LGE nulls post-contrast myocardium, TI ~250-350 ms).
HEADER_CASES = [
    ("STIR 1.5 T", dict(scanning_sequence="SE\\IR", inversion_times=[165.0], echo_times=[64.0], field_strength=1.5,
                        echo_train_length=17), "t2w", ("spin-echo", "stir")),
    ("STIR 3 T", dict(scanning_sequence="SE\\IR", inversion_times=[240.0], echo_times=[70.0], field_strength=3.0),
     "t2w", ("spin-echo", "not lge")),
    ("dark-blood TSE", dict(scanning_sequence="SE", echo_times=[80.0], field_strength=1.5), "t2w", ("t2 weighting",)),
    ("short TI on a gradient echo", dict(scanning_sequence="GR\\IR", inversion_times=[160.0], echo_times=[1.9],
                                         field_strength=1.5), "other", ("outside the lge range",)),
    ("LGE 1.5 T", dict(scanning_sequence="GR\\IR", inversion_times=[290.0], echo_times=[3.2], field_strength=1.5,
                       contrast_agent="Gadoterate"), "lge", ("inversion-recovery gradient echo", "after contrast")),
    ("LGE 3 T", dict(scanning_sequence="GR\\IR", inversion_times=[340.0], echo_times=[2.1], field_strength=3.0),
     "lge", ("lge range at 3 t",)),
    ("MIP", dict(image_type=("DERIVED", "SECONDARY", "MIP")), "angio", ("angiography",)),
    ("MPR", dict(image_type=("DERIVED", "SECONDARY", "MPR")), "reformat", ("mpr",)),
    ("secondary capture", dict(sop_class_uid=SecondaryCaptureImageStorage), "secondary", ("secondary capture",)),
    ("T1 map", dict(image_type=("DERIVED", "PRIMARY", "T1 MAP", "MOCO")), "map", ("parametric map",)),
    ("tag grid", dict(tagging="GRID"), "tagging", ("tag",)),
]


@pytest.mark.parametrize("name,headers,role,words", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_acquisition_headers_decide_when_descriptions_are_blank(name, headers, role, words):
    series = _series(n_slices=8, **headers)
    assert series.role == role, series.reasons
    assert series.sequence == ("lge" if role == "lge" else "other")
    text = " ".join(series.reasons).lower()
    assert all(word in text for word in words), series.reasons


def test_timing_tells_multi_echo_perfusion_and_t1_mapping_raw_images_apart():
    echoes = _series(n_phases=8, echo_times=[2.3 + 2.2 * k for k in range(8)], scanning_sequence="GR",
                     trigger_times=[400.0] * 8)
    assert echoes.role == "t2star" and "multi-echo" in " ".join(echoes.reasons)
    dynamics = _series(n_slices=3, n_phases=50, trigger_times=[35.0] * 50, inversion_times=[100.0] * 50,
                       scanning_sequence="GR")
    assert dynamics.role == "perfusion" and "first-pass perfusion" in " ".join(dynamics.reasons)
    molli = _series(n_phases=8, inversion_times=[100.0, 180.0, 1100.0, 1180.0, 2100.0, 2180.0, 3100.0, 4100.0],
                    trigger_times=[520.0] * 8, scanning_sequence="GR\\IR")
    assert molli.role == "map" and "MOLLI" in " ".join(molli.reasons)
    spin_echo_cycle = _series(n_phases=20, trigger_times=[40.0 * k for k in range(20)], scanning_sequence="SE")
    assert spin_echo_cycle.sequence == "other", spin_echo_cycle.reasons


# Cine and LGE as sites name them: they must stay cine and LGE (the set-aside patterns must not catch them).
CINE_NAMES = ["cine_tf2d_sa", "SA cine FIESTA", "sBTFE_4CH", "TrueFISP_retro_3CH", "CINE_SAX_BH", "B-TFE_M2D 2CH",
              "LAX 4CH SSFP", "cine_trufi_lvot"]
LGE_NAMES = ["LGE_PSIR_SA", "de_tfl2d_psir_sax_MAG", "MDE SA", "IR_TFE_LGE_4CH", "PSIR SAX", "delayed enhancement 2ch",
             "SAX LGE single shot", "Viability SA"]


def test_site_naming_of_cine_and_lge_is_kept():
    cycle = [float(t) for t in range(0, 750, 30)]
    for description in CINE_NAMES:
        series = _series(description, n_phases=len(cycle), trigger_times=cycle, scanning_sequence="GR")
        assert (series.role, series.sequence) == ("cine", "cine"), (description, series.reasons)
    for description in LGE_NAMES:
        series = _series(description, n_slices=10, scanning_sequence="GR\\IR", inversion_times=[300.0],
                         echo_times=[3.0], field_strength=1.5)
        assert (series.role, series.sequence) == ("lge", "lge"), (description, series.reasons)


def test_cli_synth_writes_extra_series_and_studies_without_contrast(tmp_path):
    from cmr_clip.cli import main

    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--seed", "4", "--workers", "1", "--quiet",
                 "--extra-series", "flow", "t2w", "--no-contrast"]) == 0
    roles = {f["role"] for f in json.loads((tmp_path / "truth" / "SYN00000.json").read_text())["frames"]}
    assert {"flow_magnitude", "flow_phase", "t2w", "cine"} <= roles
    assert roles.isdisjoint({"lge", "lge_psir", "ti_scout", "perfusion", "tagging", "t2star"})
    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--quiet", "--extra-series", "perfusion",
                 "--no-contrast"]) == 2


@pytest.mark.slow
def test_every_series_as_the_generator_knows_over_many_studies(tmp_path):
    """24 studies with every extra series (and 6 without contrast): no series takes another's role or slot."""
    wrong = []
    for index, (vendor, blank, contrast) in enumerate(
        [(v, b, c) for v in VENDORS for b in (False, True) for c in (True, True, True, True, False)]
    ):
        folder, truth = _make(tmp_path / str(index), vendor, 100 + index, blank, contrast)
        study = _quiet(read_study, folder)
        by_role = _series_by_truth_role(study, truth)
        for truth_role, members in by_role.items():
            expected = SET_ASIDE.get(truth_role)
            for series in members:
                if expected is not None and series.role != expected or expected is None and truth_role in (
                    "cine", "lge") and series.sequence != truth_role and series.role != "repeat_discarded":
                    wrong.append((vendor, blank, truth_role, series.role, series.reasons))
        for entry, role in _slot_sources(study, truth, StudyLayout.default()):
            if role != entry.split("/")[0] and not (entry.startswith("lge/") and role == "lge_psir"):
                wrong.append((vendor, blank, entry, role))
    assert wrong == []
