"""The synthetic cohort as files: valid DICOM, consistent geometry and timing, truth, reports, determinism."""

import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from cmr_clip.synthetic import DIAGNOSES, FINDINGS, VENDORS, draw_subject, make_cohort, plan_cohort

SEED = 10  # six studies: all three vendors, a Philips multi-frame study, PSIR, a patient seen twice
N = 6
LABEL_KEYS = set(FINDINGS) | {"diagnosis"}
MEASUREMENT_KEYS = {"lvef", "lvedv_ml", "lvesv_ml", "rvef", "rvedv_ml", "max_wall_thickness_mm"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    records = make_cohort(out, N, seed=SEED, num_workers=2, progress=False)
    return out, records


@pytest.fixture(scope="module")
def frames(cohort):
    """Every study's truth entries joined with its headers and pixels, read once."""
    out, records = cohort
    return {r["study_id"]: _frames(out, r["study_id"]) for r in records}


def _truth(out: Path, study_id: str) -> dict:
    return json.loads((out / "truth" / f"{study_id}.json").read_text())


def _frames(out: Path, study_id: str) -> list[dict]:
    """Truth entries joined with what the DICOM headers say about each frame."""
    study_dir = out / "studies" / study_id
    cache = {}
    joined = []
    for entry in _truth(out, study_id)["frames"]:
        if entry["path"] not in cache:
            cache[entry["path"]] = pydicom.dcmread(study_dir / entry["path"])
        ds = cache[entry["path"]]
        if entry["frame"] is None:
            ipp, iop = ds.ImagePositionPatient, ds.ImageOrientationPatient
            trigger = float(ds.TriggerTime) if "TriggerTime" in ds else None
            pixels = ds.pixel_array
        else:
            per_frame = ds.PerFrameFunctionalGroupsSequence[entry["frame"]]
            ipp = per_frame.PlanePositionSequence[0].ImagePositionPatient
            iop = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
            trigger = float(per_frame.CardiacSynchronizationSequence[0].NominalCardiacTriggerDelayTime)
            pixels = ds.pixel_array[entry["frame"]]
        joined.append({**entry, "ds": ds, "ipp": np.array(ipp, float), "iop": np.array(iop, float),
                       "trigger": trigger, "pixels": pixels})
    return joined


def _normal(iop: np.ndarray) -> np.ndarray:
    return np.cross(iop[:3], iop[3:])


def test_cohort_layout_and_reports(cohort):
    out, records = cohort
    assert [r["study_id"] for r in records] == [f"SYN{i:05d}" for i in range(N)]
    assert {p.name for p in (out / "studies").iterdir()} == {r["study_id"] for r in records}
    lines = (out / "reports.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    for r in records:
        assert set(r["labels"]) == LABEL_KEYS
        assert all(isinstance(r["labels"][k], bool) for k in FINDINGS)
        assert r["labels"]["diagnosis"] in {"normal", "icm", "nicm", "hcm", "amyloidosis"}
        assert MEASUREMENT_KEYS <= set(r["measurements"])
        assert r["vendor"] in VENDORS and r["field_strength"] in (1.5, 3.0)
        assert r["impression"].strip()
    assert {r["vendor"] for r in records} == set(VENDORS)


def test_every_file_reads_and_decodes(cohort):
    out, records = cohort
    n_files = 0
    for path in (out / "studies").rglob("*"):
        if not path.is_file():
            continue
        assert path.read_bytes()[128:132] == b"DICM", path
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID in (pydicom.uid.MRImageStorage, pydicom.uid.EnhancedMRImageStorage)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        pixels = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1))
        assert pixels.shape == ((frames,) if frames > 1 else ()) + (ds.Rows, ds.Columns)
        assert pixels.max() > 0
        n_files += 1
    assert n_files > 100 * N  # classic studies carry ~200 files each


def test_files_are_what_dcmwrite_writes(cohort):
    """Classic files are assembled from pre-encoded elements; they must equal pydicom's own output."""
    out, _ = cohort
    for path in sorted(p for p in (out / "studies" / "SYN00001").rglob("*") if p.is_file())[:40]:
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, pydicom.dcmread(path), enforce_file_format=True)
        assert buffer.getvalue() == path.read_bytes(), path


def test_truth_lists_every_frame_once_and_matches_headers(cohort, frames):
    out, records = cohort
    for r in records:
        study_dir = out / "studies" / r["study_id"]
        truth = _truth(out, r["study_id"])
        assert truth["study_id"] == r["study_id"] and truth["vendor"] == r["vendor"]
        on_disk = {str(p.relative_to(study_dir)) for p in study_dir.rglob("*") if p.is_file()}
        per_file = defaultdict(list)
        for entry in truth["frames"]:
            per_file[entry["path"]].append(entry["frame"])
        assert set(per_file) == on_disk
        for path, indices in per_file.items():
            ds = pydicom.dcmread(study_dir / path, stop_before_pixels=True)
            expected = [None] if "NumberOfFrames" not in ds else list(range(int(ds.NumberOfFrames)))
            assert indices == expected, path
        for f in frames[r["study_id"]]:
            assert int(f["ds"].SeriesNumber) == f["series_number"]
            assert f["sequence"] in ("cine", "lge", "other")
            if f["role"] in ("lge", "lge_psir", "ti_scout"):
                assert float(f["ds"].InversionTime) > 0
            if f["sequence"] == "cine":
                assert int(f["ds"].CardiacNumberOfImages) == r["cardiac_phases"]["n"]


def test_study_has_the_series_a_processor_must_set_aside(cohort):
    out, records = cohort
    for r in records:
        frames = _truth(out, r["study_id"])["frames"]
        roles = {f["role"] for f in frames}
        assert {"localizer", "ti_scout", "t1_map", "repeat_discarded", "cine", "lge"} <= roles
        for f in frames:
            if f["role"] in ("localizer", "ti_scout", "t1_map"):
                assert f["sequence"] == "other"
        discarded = [f for f in frames if f["role"] == "repeat_discarded"]
        view = discarded[0]["view"]
        assert discarded[0]["sequence"] == "cine" and view in ("2ch", "3ch", "4ch")
        kept = [f for f in frames if f["role"] == "cine" and f["view"] == view]
        assert max(f["series_number"] for f in discarded) < min(f["series_number"] for f in kept)
        views = {(f["sequence"], f["view"]) for f in frames if f["role"] in ("cine", "lge")}
        assert {(s, v) for s in ("cine", "lge") for v in ("sax", "2ch", "3ch", "4ch")} <= views


def test_sax_slices_parallel_and_ordered_base_to_apex_along_normal(cohort, frames):
    out, records = cohort
    for r in records:
        for role in ("cine", "lge"):
            sax = [f for f in frames[r["study_id"]] if f["role"] == role and f["view"] == "sax"]
            slices = sorted({f["slice"] for f in sax})
            assert len(slices) >= 8 and slices == list(range(len(slices)))
            normal = _normal(sax[0]["iop"])
            for f in sax:
                assert np.allclose(f["iop"], sax[0]["iop"], atol=1e-6)
            position = {f["slice"]: float(f["ipp"] @ normal) for f in sax}
            steps = np.diff([position[s] for s in slices])
            assert np.all(steps > 0) or np.all(steps < 0)
            assert np.all((np.abs(steps) >= 7.99) & (np.abs(steps) <= 10.01))
            spacing = float(sax[0]["ds"].get("SpacingBetweenSlices") or
                            sax[0]["ds"].SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices)
            assert np.allclose(np.abs(steps), spacing, atol=0.02)


def _plane(frame):
    normal = _normal(frame["iop"])
    return normal, float(normal @ frame["ipp"])


def _pixel_spacing(frame) -> tuple[float, float]:
    ds = frame["ds"]
    spacing = ds.get("PixelSpacing") or ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    return float(spacing[0]), float(spacing[1])


def _pixel_of(point, frame):
    rows, cols = _pixel_spacing(frame)
    d = np.asarray(point) - frame["ipp"]
    return int(round(d @ frame["iop"][3:] / rows)), int(round(d @ frame["iop"][:3] / cols))


def _lv_axis(study):
    """The LV long axis as the DICOM headers give it: the line where the 2CH and 4CH planes meet."""
    (n1, d1), (n2, d2) = (_plane(next(f for f in study if f["role"] == "cine" and f["view"] == v))
                          for v in ("2ch", "4ch"))
    axis = np.cross(n1, n2)
    axis /= np.linalg.norm(axis)
    return np.linalg.lstsq(np.stack([n1, n2, axis]), np.array([d1, d2, 0.0]), rcond=None)[0], axis


def _blood_pool_area(frame, point, axis) -> int:
    """Pixels of the bright region around the point where the LV axis crosses this image."""
    normal, offset = _plane(frame)
    row, col = _pixel_of(point + axis * (offset - normal @ point) / (normal @ axis), frame)
    image = frame["pixels"].astype(float)
    regions, _ = ndimage.label(image > 0.5 * np.percentile(image, 99.5))
    return int((regions == regions[row, col]).sum()) if regions[row, col] else 0


def test_long_axis_planes_meet_on_the_lv_long_axis(cohort, frames):
    out, records = cohort
    for r in records:
        study = frames[r["study_id"]]
        sax = [f for f in study if f["role"] == "cine" and f["view"] == "sax"]
        sax_normal = _normal(sax[0]["iop"])
        point, axis = _lv_axis(study)
        assert abs(axis @ sax_normal) > np.cos(np.deg2rad(1.0))  # 2CH and 4CH meet on a line normal to the stack
        for view in ("2ch", "3ch", "4ch"):
            normal, offset = _plane(next(f for f in study if f["role"] == "cine" and f["view"] == view))
            assert abs(normal @ sax_normal) < 1e-3  # perpendicular to the SAX planes
            assert abs(normal @ point - offset) < 0.5  # and through the same line
        # Where that line crosses a mid-ventricular slice at end-diastole, the image shows a bright blood pool.
        middle = len({f["slice"] for f in sax}) // 2
        mid = next(f for f in sax if f["slice"] == middle and f["phase"] == 0)
        area_mm2 = _blood_pool_area(mid, point, axis) * np.prod(_pixel_spacing(mid))
        assert 500.0 < area_mm2 < 7000.0


def test_cine_pixels_show_the_labelled_ventricular_function(cohort, frames):
    """LV blood volume read off the cine SAX pixels peaks at ED, bottoms out at the labelled ES, and its
    ejection fraction ranks the studies with LV dysfunction below the others."""
    out, records = cohort
    image_ef = {}
    for r in records:
        study = frames[r["study_id"]]
        point, axis = _lv_axis(study)
        sax = [f for f in study if f["role"] == "cine" and f["view"] == "sax" and f["slice"] > 1]  # basal slices
        n = r["cardiac_phases"]["n"]                    # meet the atria and aortic root as the base descends
        volume = np.zeros(n)
        for f in sax:
            volume[f["phase"]] += _blood_pool_area(f, point, axis)
        assert volume.argmax() in (0, 1, n - 1)
        assert abs(int(volume.argmin()) - r["cardiac_phases"]["es"]) <= 2
        image_ef[r["study_id"]] = 100.0 * (1.0 - volume.min() / volume[0])
    reduced = [image_ef[r["study_id"]] for r in records if r["labels"]["lv_dysfunction"]]
    preserved = [image_ef[r["study_id"]] for r in records if not r["labels"]["lv_dysfunction"]]
    assert reduced and preserved and max(reduced) < min(preserved)


def test_trigger_time_increases_with_phase(cohort, frames):
    out, records = cohort
    for r in records:
        rr = 60000.0 / r["heart_rate_bpm"]
        by_slice = defaultdict(list)
        for f in frames[r["study_id"]]:
            if f["sequence"] == "cine":
                by_slice[(f["series_number"], f["slice"])].append(f)
        for series in by_slice.values():
            series.sort(key=lambda f: f["phase"])
            assert [f["phase"] for f in series] == list(range(r["cardiac_phases"]["n"]))
            times = [f["trigger"] for f in series]
            assert np.all(np.diff(times) > 0) and times[-1] < rr
            nominal = series[0]["ds"].get("NominalInterval")
            assert nominal is not None and abs(float(nominal) - rr) < 1.0


def test_vendor_styles(cohort, frames):
    out, records = cohort
    for r in records:
        study = frames[r["study_id"]]
        manufacturer = study[0]["ds"].Manufacturer
        sax_series = {f["series_number"] for f in study if f["role"] == "cine" and f["view"] == "sax"}
        n_slices = len({f["slice"] for f in study if f["role"] == "cine" and f["view"] == "sax"})
        if r["vendor"] == "ge":
            assert manufacturer == "GE MEDICAL SYSTEMS" and len(sax_series) == n_slices
        else:
            assert len(sax_series) == 1
        if r["vendor"] == "siemens":
            assert manufacturer == "SIEMENS"
        if r["vendor"] == "philips":
            assert manufacturer.startswith("Philips")
            assert all(f["series_number"] % 100 == 1 for f in study)
        assert float(study[0]["ds"].MagneticFieldStrength) == r["field_strength"]
    paths = [f["path"] for r in records for f in _truth(out, r["study_id"])["frames"]]
    assert any(p.endswith(".dcm") for p in paths) and any("." not in Path(p).name for p in paths)
    assert any(f["frame"] is not None for r in records for f in _truth(out, r["study_id"])["frames"])


def test_no_patient_identity_outside_the_dicom_headers(cohort):
    out, records = cohort
    exported = (out / "reports.jsonl").read_text() + "".join(p.read_text() for p in (out / "truth").iterdir())
    header_ids = {}
    for r in records:
        path = next(p for p in (out / "studies" / r["study_id"]).rglob("*") if p.is_file())
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        identity = [str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber,
                    ds.StudyInstanceUID, ds.SOPInstanceUID]
        assert all(len(value) >= 6 for value in identity)
        for value in identity + str(ds.PatientName).split("^"):
            assert value not in exported, value
            assert value not in "".join(str(p.relative_to(out)) for p in (out / "studies").rglob("*"))
        header_ids.setdefault(r["patient_id"], set()).add(ds.PatientID)
    # the same synthetic patient carries the same MRN in both studies, and different patients differ
    assert all(len(ids) == 1 for ids in header_ids.values())
    assert len(set.union(*header_ids.values())) == len(header_ids)
    assert len(header_ids) < len(records)  # this seed has a patient with two studies


def test_some_patients_have_two_studies():
    plans = plan_cohort(200, 0, VENDORS)
    visits = defaultdict(list)
    for plan in plans:
        visits[plan.patient_index].append(plan)
    assert 10 < sum(len(v) == 2 for v in visits.values()) < 40
    assert all(len(v) <= 2 and v[0].vendor == v[-1].vendor for v in visits.values())


def test_enrichment_draws_a_share_of_patients_as_cases_of_each_finding():
    n_plans = 3000
    for enrich in (0.5, 1.0):
        plans = plan_cohort(n_plans, 0, VENDORS, enrich)
        first = {plan.patient_index: plan for plan in plans if plan.visit == 0}
        # A follow-up visit is the same patient: drawn for the same finding.
        assert all(plan.enriched_for == first[plan.patient_index].enriched_for for plan in plans)
        drawn = [plan.enriched_for for plan in first.values()]
        n = len(drawn)
        share = sum(d is not None for d in drawn) / n
        assert abs(share - enrich) <= 4 * np.sqrt(enrich * (1 - enrich) / n) + 1e-9
        # Each finding as often: a share enrich / 8 of patients each (binomial, 4 standard errors).
        p = enrich / len(FINDINGS)
        for finding in FINDINGS:
            assert abs(drawn.count(finding) / n - p) <= 4 * np.sqrt(p * (1 - p) / n), finding
        # The first studies of a larger cohort are those of a smaller one, enriched alike.
        assert plan_cohort(100, 0, VENDORS, enrich) == plans[:100]
    assert {plan.enriched_for for plan in plan_cohort(300, 0, VENDORS)} == {None}


def test_enrichment_keeps_the_cohort_mix_given_the_finding():
    """A subject drawn to have a finding is a natural subject that has it: the diagnoses and the other
    findings among conditioned draws match those among natural subjects with the finding."""
    rng = np.random.default_rng(0)
    natural = [draw_subject(rng) for _ in range(12000)]
    for finding in ("pericardial_effusion", "rv_dysfunction"):
        cases = [s for s in natural if s.findings[finding]]
        drawn = [draw_subject(rng, require=finding) for _ in range(len(cases))]
        assert all(s.findings[finding] for s in drawn)
        for name, value in [*(("diagnosis", d) for d in DIAGNOSES), *(("finding", f) for f in FINDINGS)]:
            def share(group):
                return np.mean([(s.diagnosis == value) if name == "diagnosis" else s.findings[value] for s in group])
            p = share(cases)
            # Two samples of the same size from one distribution: difference within 4 standard errors.
            assert abs(share(drawn) - p) <= 4 * np.sqrt(2 * p * (1 - p) / len(cases)) + 1e-9, (finding, value)


def test_enrichment_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="enrich must be between 0 and 1"):
        make_cohort(tmp_path, 1, enrich=1.5, progress=False)
    assert not (tmp_path / "reports.jsonl").exists()
    with pytest.raises(ValueError, match="unknown finding 'murmur'"):
        draw_subject(np.random.default_rng(0), require="murmur")
    with pytest.raises(ValueError, match="no subject with lge found in 10000 draws of diagnosis 'normal'"):
        draw_subject(np.random.default_rng(0), diagnosis="normal", require="lge")


def _pixel_bytes(out: Path, study_id: str) -> dict:
    study_dir = out / "studies" / study_id
    return {str(p.relative_to(study_dir)): pydicom.dcmread(p).PixelData
            for p in sorted(study_dir.rglob("*")) if p.is_file()}


def test_same_seed_same_cohort_whatever_the_worker_count(cohort, tmp_path):
    out, records = cohort
    again = make_cohort(tmp_path / "again", 2, seed=SEED, num_workers=1, progress=False)
    assert again == records[:2]
    for r in again:
        assert _pixel_bytes(tmp_path / "again", r["study_id"]) == _pixel_bytes(out, r["study_id"])
        assert _truth(tmp_path / "again", r["study_id"]) == _truth(out, r["study_id"])


def test_different_seed_different_cohort(cohort, tmp_path):
    out, records = cohort
    other = make_cohort(tmp_path / "other", 2, seed=SEED + 1, num_workers=1, progress=False)
    assert [r["impression"] for r in other] != [r["impression"] for r in records[:2]]
    assert [r["measurements"] for r in other] != [r["measurements"] for r in records[:2]]
    first = next(iter(_pixel_bytes(tmp_path / "other", "SYN00000").values()))
    assert first not in _pixel_bytes(out, "SYN00000").values()


def test_blank_descriptions(tmp_path):
    make_cohort(tmp_path, 1, seed=5, vendors=["siemens"], num_workers=1, progress=False, blank_descriptions=True)
    files = [p for p in (tmp_path / "studies").rglob("*") if p.is_file()]
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SeriesDescription == "" and ds.ProtocolName == "" and ds.SequenceName == ""
    assert not any("cine" in str(p).lower() or "psir" in str(p).lower() for p in files)


def test_vendor_restriction_and_rewriting_a_folder(tmp_path):
    records = make_cohort(tmp_path, 2, seed=1, vendors=["philips"], num_workers=1, progress=False)
    assert {r["vendor"] for r in records} == {"philips"}
    before = _pixel_bytes(tmp_path, "SYN00000")
    again = make_cohort(tmp_path, 1, seed=1, vendors=["philips"], num_workers=1, progress=False)
    assert again == records[:1]  # the first studies of a cohort do not depend on its size
    assert [p.name for p in (tmp_path / "studies").iterdir()] == ["SYN00000"]  # nothing stale left behind
    assert [p.name for p in (tmp_path / "truth").iterdir()] == ["SYN00000.json"]
    assert _pixel_bytes(tmp_path, "SYN00000") == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"n": 2.5}, "n must be a positive integer"),
        ({"n": 1, "seed": -1}, "seed must be a non-negative integer"),
        ({"n": 1, "size": "medium"}, "size must be one of"),
        ({"n": 1, "vendors": ["toshiba"]}, "unknown vendor 'toshiba'"),
        ({"n": 1, "vendors": []}, "vendors must name at least one"),
        ({"n": 1, "num_workers": 0}, "num_workers must be a positive integer"),
        ({"n": 1, "extra_series": ["dwi"]}, r"unknown extra series \['dwi'\]"),
        ({"n": 1, "extra_series": ["perfusion"], "contrast": False}, "perfusion needs contrast"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_cohort(tmp_path, progress=False, **kwargs)
    assert not (tmp_path / "reports.jsonl").exists()


def test_cli_synth_writes_a_cohort(tmp_path, capsys):
    from cmr_clip.cli import main

    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--seed", "2", "--workers", "1", "--quiet"]) == 0
    assert "wrote 1 studies" in capsys.readouterr().out
    record = json.loads((tmp_path / "reports.jsonl").read_text())
    assert record["study_id"] == "SYN00000" and (tmp_path / "truth" / "SYN00000.json").exists()
    assert main(["synth", "--out", str(tmp_path / "bad"), "--n", "0"]) == 2
    assert "n must be a positive integer" in capsys.readouterr().err
    # --enrich 1: every patient is drawn as a case of one finding, which its report's labels carry.
    assert main(["synth", "--out", str(tmp_path / "enriched"), "--n", "2", "--workers", "1", "--quiet",
                 "--enrich", "1"]) == 0
    for line in (tmp_path / "enriched" / "reports.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["enriched_for"] in FINDINGS and record["labels"][record["enriched_for"]] is True
    assert "enriched_for" not in record_keys(tmp_path / "reports.jsonl")


def record_keys(reports: Path) -> set:
    return {key for line in reports.read_text().splitlines() for key in json.loads(line)}


def test_preview_montage(tmp_path):
    pytest.importorskip("matplotlib")
    from cmr_clip.synthetic.preview import _rows

    make_cohort(tmp_path, 1, seed=4, num_workers=1, progress=False, preview=True)
    data = (tmp_path / "preview.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    titles = [title for title, _ in _rows(_truth(tmp_path, "SYN00000"))]
    assert {"localizer", "cine sax", "cine 4ch", "lge sax", "t1_map", "ti_scout"} <= set(titles)
