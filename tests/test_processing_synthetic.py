"""The processor against the synthetic cohort generator's ground truth, every vendor style.

The generator knows what every frame is (sequence, view, role, slice, phase). Read back with and without
series descriptions, every frame must land in a series classified as the generator knows it, in its slice
and phase. The cohort's headers carry synthetic patient identities; none may leak into any output.
"""

from __future__ import annotations

import json
import logging
import random
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cmr_clip.processing import CMRCLIPProcessor, CMRStudyError, CMRStudyProcessor, StudyLayout, read_study, select_frames
from cmr_clip.processing.display import study_summary
from cmr_clip.synthetic import make_cohort

VENDORS = ("siemens", "ge", "philips")
USED_ROLES = ("cine", "lge", "lge_psir")
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName", "ReferringPhysicianName", "StudyDate")


def _make(root: Path, seeds: range, blank: bool) -> list[tuple[Path, dict]]:
    studies = []
    for seed, vendor in zip(seeds, VENDORS * len(seeds)):
        out = root / f"{vendor}-{seed}"
        make_cohort(out, 1, seed=seed, vendors=[vendor], progress=False, num_workers=1, blank_descriptions=blank)
        for truth_path in sorted((out / "truth").glob("*.json")):
            truth = json.loads(truth_path.read_text())
            studies.append((out / "studies" / truth["study_id"], truth))
    return studies


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return {blank: _make(root / ("blank" if blank else "named"), range(3), blank) for blank in (False, True)}


def score(study, truth: dict, tally: dict) -> list:
    """Per-frame check against the truth; fills `tally[class] = [right, total]` and returns the errors."""
    where = {}
    for series in study.series:
        for s, frames in enumerate(series.grid):
            for p, frame in enumerate(frames):
                where[(frame.file.name, frame.frame_index)] = (series, s, p)
    errors = []
    for expected in truth["frames"]:
        series, s, p = where[(expected["path"], expected["frame"])]
        should_use = expected["role"] in USED_ROLES
        used = series.used and series.sequence != "other"
        right = (series.sequence, series.view) == (expected["sequence"], expected["view"]) and used == should_use
        if right and should_use:
            right = (s, p) == (expected["slice"], expected["phase"])
        label = f"{expected['sequence']}/{expected['view']}" if should_use else expected["role"]
        tally[label][0] += right
        tally[label][1] += 1
        if not right:
            errors.append((expected["path"], expected["frame"], label, series.sequence, series.view, series.role, s, p))
    return errors


def accuracy_table(studies) -> tuple[dict, list]:
    tally: dict = defaultdict(lambda: [0, 0])
    errors = []
    for folder, truth in studies:
        errors += score(_quiet(read_study, folder), truth, tally)
    return dict(tally), errors


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.mark.parametrize("blank", [False, True], ids=["descriptions", "blank-descriptions"])
def test_every_frame_classified_and_ordered_as_the_generator_knows(cohort, blank):
    assert {truth["vendor"] for _, truth in cohort[blank]} == set(VENDORS)
    tally, errors = accuracy_table(cohort[blank])
    print(f"\nper-class frame accuracy ({'blank' if blank else 'with'} descriptions):")
    for label, (right, total) in sorted(tally.items()):
        print(f"  {label:<18} {right}/{total} = {right / total:.3f}")
    assert {"cine/sax", "cine/2ch", "cine/3ch", "cine/4ch", "lge/sax", "localizer", "ti_scout", "t1_map", "repeat_discarded"} <= set(tally)
    assert errors == []


def release_sequence(truth: dict) -> list:
    """The release's 64 frames from the generator's truth alone (reference-model.md), as (path, frame) or None."""
    used = defaultdict(dict)
    for f in truth["frames"]:
        if f["role"] in ("cine", "lge"):
            used[(f["sequence"], f["view"])][(f["slice"], f["phase"])] = (f["path"], f["frame"])

    def middle_slice_all_phases(key):
        grid = used.get(key, {})
        if not grid:
            return []
        middle = (max(s for s, _ in grid) + 1) // 2
        return [grid[(s, p)] for s, p in sorted(grid) if s == middle]

    lge_sax = [frame for _, frame in sorted(used.get(("lge", "sax"), {}).items())]
    timeline = middle_slice_all_phases(("cine", "4ch")) + middle_slice_all_phases(("cine", "sax")) + lge_sax
    for view in ("4ch", "2ch", "3ch"):
        image = list(used.get(("lge", view), {}).values())
        timeline += image[:1] * len(lge_sax) if image else []
    if len(timeline) < 64:
        return timeline + [None] * (64 - len(timeline))
    bounds = [int(b) for b in np.linspace(0, len(timeline), 65)]
    return [timeline[(a + b - 1) // 2] for a, b in zip(bounds[:-1], bounds[1:])]


def test_reference_layout_gives_the_release_frame_sequence(cohort):
    for folder, truth in cohort[True]:
        selection = select_frames(_quiet(read_study, folder), StudyLayout.reference())
        ours = [None if f is None else (f.frame.file.name, f.frame.frame_index) for f in selection.frames]
        assert ours == release_sequence(truth), truth["vendor"]


def _identities(folder: Path, report_path: Path) -> set[str]:
    values = set()
    for path in list(folder.rglob("*"))[:40]:
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for keyword in PHI_KEYWORDS:
                value = str(ds.get(keyword, "") or "")
                values.add(value)
                values.update(part for part in value.replace("^", " ").split() if len(part) >= 4)
    for line in report_path.read_text().splitlines():
        values.add(json.loads(line)["patient_id"])
    return {v for v in values if len(v) >= 4}


def test_no_patient_identity_in_any_output(cohort, tmp_path, caplog, capsys):
    from cmr_clip.cli import main
    from transformers import BertTokenizer

    caplog.set_level(logging.DEBUG)
    folder, truth = cohort[False][0]
    identities = _identities(folder, folder.parents[1] / "reports.jsonl")
    assert len(identities) >= 5  # names, IDs, birth date, accession number ... are there to leak
    study = read_study(folder)
    uids = {uid for s in study.series for uid in s.series_instance_uids}
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "normal"])})
    processor = CMRCLIPProcessor(tokenizer=tokenizer, feature_extractor=CMRStudyProcessor(num_frames=8, image_size=16))
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in list(folder.rglob("*"))[:5]:
        if path.is_file():
            (broken / path.name).write_bytes(path.read_bytes()[:900])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = processor(text=["normal", "normal"], studies=[folder, broken], skip_errors=True)
    processor.save_pretrained(tmp_path / "saved")
    study.montage(tmp_path / "montage.png", layout=StudyLayout.default(8))
    assert main(["inspect", str(folder), "--montage", str(tmp_path / "cli.png")]) == 0
    texts = [
        study_summary(study, StudyLayout.reference()),
        json.dumps(out["study_metadata"]),
        json.dumps(out["errors"]),
        caplog.text,
        capsys.readouterr().out,
        " ".join(str(w.message) for w in caught if "cmr_clip" in (w.filename or "")),
        *(p.read_text(errors="ignore") for p in (tmp_path / "saved").iterdir()),
        (tmp_path / "montage.png").read_bytes().decode("latin-1"),
        (tmp_path / "cli.png").read_bytes().decode("latin-1"),
    ]
    assert out["errors"] and out["study_metadata"]
    for text in texts:
        for secret in identities | uids:
            assert secret not in text


@pytest.fixture(scope="module")
def fuzz_source(cohort):
    folder, _ = cohort[False][1]
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _fuzz(files: list[Path], n_variants: int, tmp_path: Path, seed: int) -> dict:
    """Damaged copies (truncated, bytes overwritten): each must give a video or a typed error, and every
    damaged file must be either read or listed in `study.skipped`."""
    rng = random.Random(seed)
    processor = CMRStudyProcessor(num_frames=8, image_size=16)
    outcomes = {"ok": 0, "typed": 0, "set aside": 0}
    for variant in range(n_variants):
        chosen, damaged = list(files), []
        for index in rng.sample(range(len(files)), rng.randint(1, 4)):
            data = bytearray(files[index].read_bytes())
            if rng.random() < 0.5:
                data = data[: rng.randrange(len(data))]
            else:
                for _ in range(rng.randint(1, 60)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            target = tmp_path / f"{variant}_{index}"
            target.write_bytes(bytes(data))
            chosen[index] = target
            damaged.append(target.name)
        try:
            study = _quiet(read_study, chosen)
            read = {Path(f.file.name).name for s in study.series for f in s.frames}
            skipped = {Path(item.file.name).name for item in study.skipped if item.file is not None}
            assert all(name in read | skipped for name in damaged)
            outcomes["set aside"] += sum(name in skipped for name in damaged)
            _quiet(processor, study)
            outcomes["ok"] += 1
        except CMRStudyError:
            outcomes["typed"] += 1
    return outcomes


def test_damaged_copies_of_a_cohort_study_fail_typed_or_succeed(fuzz_source, tmp_path):
    outcomes = _fuzz(fuzz_source, 12, tmp_path, seed=5)
    assert outcomes["ok"] >= 10 and outcomes["set aside"] > 0, outcomes


@pytest.mark.slow
def test_many_damaged_copies_of_a_cohort_study(fuzz_source, tmp_path):
    outcomes = _fuzz(fuzz_source, 400, tmp_path, seed=6)
    assert outcomes["ok"] >= 360 and outcomes["set aside"] > 200, outcomes


@pytest.mark.slow
def test_classification_on_a_larger_cohort(tmp_path):
    for blank in (False, True):
        tally, errors = accuracy_table(_make(tmp_path / str(blank), range(100, 124), blank))
        print(f"\nper-class frame accuracy, 24 studies ({'blank' if blank else 'with'} descriptions):")
        for label, (right, total) in sorted(tally.items()):
            print(f"  {label:<18} {right}/{total} = {right / total:.3f}")
        assert errors == []


def test_metadata_carries_each_series_spacing_from_its_own_header(tmp_path):
    """A synthetic vendor's spacing (field of view / matrix, not Sunnybrook's 1.29 mm) reaches the metadata
    of every series, checked against pydicom's reading of a file of that series; the output spacing is
    the millimetres the centre crop keeps over the output size."""
    (folder, _), = _make(tmp_path, range(1), blank=False)
    headers = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if "PixelSpacing" in ds:
                headers.setdefault(int(ds.SeriesNumber), ds)
    size, short_side, crop = 24, 40, 32
    processor = CMRStudyProcessor(image_size=size, resize_shortest_edge=short_side, crop_size=crop)
    entries = processor(folder)["study_metadata"][0]["series"]
    assert len(entries) >= 5
    for entry in entries:
        ds = headers[entry["series_number"]]
        spacing = [float(v) for v in ds.PixelSpacing]
        assert entry["pixel_spacing"] == pytest.approx(spacing)
        assert entry["spatial_shape"] == [ds.Rows, ds.Columns]
        kept_mm = min(ds.Rows * spacing[0], ds.Columns * spacing[1]) * crop / short_side
        assert entry["output_pixel_spacing"] == pytest.approx([kept_mm / size, kept_mm / size], rel=0.02)
    assert any(abs(entry["pixel_spacing"][0] - 1.2891) > 0.05 for entry in entries)
