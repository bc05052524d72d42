"""A real GE 1.5 T study (Sunnybrook SCD0000301, CC0; Radau et al., MIDAS Journal 2009) read as a PACS export.

The cine stack and the 3-plane scout share one SeriesInstanceUID. The expert contours name their images by
InstanceNumber; mapped through our ordering they must fall on two phases in every slice, run base to apex,
and give the volumes our own computation expects.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from cmr_clip.processing import CMRStudyProcessor, read_study

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
STUDY = SHARED / "data" / "sunnybrook" / "SCD0000301"

pytestmark = pytest.mark.skipif(not STUDY.is_dir(), reason="shared Sunnybrook data not available")


@pytest.fixture(scope="module")
def study():
    return read_study([*sorted((STUDY / "cine").iterdir()), *sorted((STUDY / "localizer").iterdir())])


@pytest.fixture(scope="module")
def cavity_areas(study):
    """{(slice, phase): endocardial contour area in pixels} through our ordering."""
    sax = study.find("cine", "sax")
    position = {frame.instance_number: (s, p) for s, frames in enumerate(sax.grid) for p, frame in enumerate(frames)}
    areas = {}
    for path in (STUDY / "contours" / "i-contours").glob("*.txt"):
        instance = int(re.search(r"IM-\d+-(\d+)-", path.name).group(1))
        x, y = np.loadtxt(path).T
        areas[position[instance]] = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    return areas


def test_cine_stack_is_one_sax_series_of_10_slices_by_20_phases(study):
    cines = [s for s in study.series if s.sequence == "cine" and s.used]
    assert len(cines) == 1
    sax = cines[0]
    assert (sax.view, sax.n_slices, sax.n_phases) == ("sax", 10, 20)
    assert all(len(frames) == 20 for frames in sax.grid)


def test_scout_sharing_the_uid_is_set_aside(study):
    sax = study.find("cine", "sax")
    scouts = [s for s in study.series if s is not sax]
    assert scouts and all(s.sequence == "other" and s.role == "localizer" for s in scouts)
    assert all(s.series_instance_uid == sax.series_instance_uid for s in scouts)
    assert sum(len(s.frames) for s in scouts) == 15


def test_slice_spacing_comes_from_geometry_not_slice_location(study):
    sax = study.find("cine", "sax")
    assert sax.slice_spacing == pytest.approx(8.0, abs=0.05)
    locations = [sax.grid[s][0].slice_location for s in range(sax.n_slices)]
    assert np.median(np.abs(np.diff(locations))) == pytest.approx(5.29, abs=0.05)


def test_phases_ordered_by_trigger_time(study):
    for frames in study.find("cine", "sax").grid:
        triggers = [f.trigger_time for f in frames]
        assert triggers == sorted(triggers) and len(set(triggers)) == 20


def test_contours_fall_on_the_same_two_phases_in_every_slice(cavity_areas):
    phases_per_slice = {}
    for s, p in cavity_areas:
        phases_per_slice.setdefault(s, set()).add(p)
    assert sorted(phases_per_slice) == list(range(10))
    assert len({frozenset(v) for v in phases_per_slice.values()}) == 1
    assert len(next(iter(phases_per_slice.values()))) == 2


def test_first_slice_is_basal_and_last_apical(cavity_areas):
    by_phase = {p: [cavity_areas[(s, p)] for s in range(10)] for p in {p for _, p in cavity_areas}}
    diastole = max(by_phase.values(), key=sum)
    # base: the cavity is largest at end-diastole (the very first slice cuts near the valve plane)
    assert diastole[0] >= 0.9 * max(diastole)
    for areas in by_phase.values():
        assert areas[-1] == min(areas)  # apex: the smallest cavity
        assert areas[0] > 2.5 * areas[-1]
        assert all(a > b for a, b in zip(areas[4:], areas[5:]))  # shrinking towards the apex


def test_volumes_from_our_spacing_give_the_expected_edv_and_ef(study, cavity_areas):
    sax = study.find("cine", "sax")
    row_mm, col_mm = sax.first_frame.pixel_spacing
    volumes = {}
    for (s, p), area in cavity_areas.items():
        volumes[p] = volumes.get(p, 0.0) + area * row_mm * col_mm * sax.slice_spacing / 1000.0
    edv, esv = max(volumes.values()), min(volumes.values())
    assert edv == pytest.approx(230.0, abs=5.0)
    assert 100.0 * (edv - esv) / edv == pytest.approx(22.0, abs=1.5)


def test_processor_uses_the_middle_slice_and_reports_missing_views(study):
    processor = CMRStudyProcessor(layout="reference", image_size=32, resize_shortest_edge=36, crop_size=36)
    out = processor(study)
    meta = out["study_metadata"][0]
    assert out["pixel_values_videos"].shape == (1, 64, 3, 32, 32)
    used = [f for f in meta["frames_used"] if f["entry"] != "zeros"]
    assert len(used) == 20 and {f["slice"] for f in used} == {5}
    assert [f["phase"] for f in used] == list(range(20))
    assert set(meta["missing_views"]) == {"cine/4ch", "lge/sax", "lge/4ch", "lge/2ch", "lge/3ch"}
    assert meta["zero_frames"] == 44 and out["pixel_values_videos"][0, 20:].abs().sum() == 0


def _nearest_by_trigger_time(folder: Path, damaged: Path) -> int:
    """InstanceNumber of the file nearest in time to `damaged` at its slice position, read with pydicom alone
    (ties: the earlier)."""
    target = pydicom.dcmread(damaged, stop_before_pixels=True)
    candidates = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if path != damaged and list(ds.ImagePositionPatient) == list(target.ImagePositionPatient):
            candidates.append((abs(float(ds.TriggerTime) - float(target.TriggerTime)), float(ds.TriggerTime), int(ds.InstanceNumber)))
    return min(candidates)[2]


def test_a_truncated_selected_frame_is_replaced_by_its_nearest_decodable_neighbour(study, tmp_path):
    processor = CMRStudyProcessor(layout="reference", image_size=32, resize_shortest_edge=36, crop_size=36)
    before = processor(study)
    sax = study.find("cine", "sax")
    slot_instance = [None if f["entry"] == "zeros" else sax.frame_at(f["slice"], f["phase"]).instance_number
                     for f in before["study_metadata"][0]["frames_used"]]
    victim = slot_instance[7]
    copy = tmp_path / "SCD"
    shutil.copytree(STUDY / "cine", copy / "cine")
    shutil.copytree(STUDY / "localizer", copy / "localizer")
    damaged = next(p for p in (copy / "cine").iterdir() if int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) == victim)
    damaged.write_bytes(damaged.read_bytes()[:-40000])  # the header survives, the pixel data does not
    neighbour = _nearest_by_trigger_time(copy / "cine", damaged)

    after = processor(read_study(copy))
    video_before, video_after = before["pixel_values_videos"][0], after["pixel_values_videos"][0]
    replaced = [i for i, instance in enumerate(slot_instance) if instance == victim]
    shown_instead = [i for i, instance in enumerate(slot_instance) if instance == neighbour]
    assert replaced and shown_instead
    for i in replaced:
        assert torch.equal(video_after[i], video_after[shown_instead[0]])  # the neighbour's frame, as shown in this video
        assert not torch.allclose(video_after[i], video_before[i], atol=0.05)
    others = [i for i in range(len(slot_instance)) if i not in replaced]
    # every other frame as before, up to the series' 8-bit window, taken now without the lost frame
    assert torch.allclose(video_after[others], video_before[others], atol=0.01)
    warnings = after["study_metadata"][0]["warnings"]
    notes = [w for w in warnings if "replaced by" in w]
    assert len(notes) == 1 and f"instance {victim}:" in notes[0] and "pixel data truncated" in notes[0]
    assert "phase" in notes[0] and "of the same slice" in notes[0] and str(copy) not in notes[0]


def test_metadata_carries_the_spacing_and_shape_the_header_states(study):
    """Spacing and shape as pydicom reads them from a cine file; the output spacing from the field of view
    the crop keeps (here the whole square image) over the output size."""
    header = pydicom.dcmread(sorted((STUDY / "cine").iterdir())[0], stop_before_pixels=True)
    row_mm, col_mm = (float(v) for v in header.PixelSpacing)
    processor = CMRStudyProcessor(layout="reference", image_size=32, resize_shortest_edge=36, crop_size=36)
    series = {s["series_number"]: s for s in processor(study)["study_metadata"][0]["series"]}
    cine = series[int(header.SeriesNumber)]
    assert cine["sequence"] == "cine"
    assert cine["pixel_spacing"] == pytest.approx([row_mm, col_mm])
    assert cine["spatial_shape"] == [int(header.Rows), int(header.Columns)]
    assert cine["output_pixel_spacing"] == pytest.approx([header.Rows * row_mm / 32, header.Columns * col_mm / 32])


def test_the_demo_zoom_keeps_the_expert_outlined_heart_of_a_real_scan_with_room_to_spare():
    """The demo's centre crop (`zoom_sizes(64, 1.25)`) assumes the heart sits near the image centre, as a
    technologist plans it; our phantom is planned that way too, so the check is on a real scanner's images: every
    expert-outlined LV epicardium of this study, filled as a mask and put through the processor's own resize and
    crop, keeps all of its area, and lies at least 25 mm inside the kept square on every side (room for the RV)."""
    from matplotlib.path import Path as Polygon

    from cmr_clip.demo import DemoSettings
    from cmr_clip.processing.pixels import zoom_sizes

    transform = CMRStudyProcessor(num_frames=16, image_size=64, **zoom_sizes(64, DemoSettings.zoom)).transform
    whole = CMRStudyProcessor(num_frames=16, image_size=64).transform
    contours = sorted((STUDY / "contours" / "o-contours").glob("*.txt"))
    assert len(contours) >= 10
    for path in contours:
        instance = int(re.search(r"IM-\d+-(\d+)-", path.name).group(1))
        header = pydicom.dcmread(STUDY / "cine" / f"{instance}.dcm", stop_before_pixels=True)
        rows, columns, spacing = int(header.Rows), int(header.Columns), float(header.PixelSpacing[0])
        outline = np.loadtxt(path)  # "x y" pixel coordinates
        ys, xs = np.mgrid[:rows, :columns]
        inside = Polygon(outline).contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(rows, columns)
        mask = (inside * 255).astype(np.uint8)
        kept, full = transform.geometry(mask).sum().item(), whole.geometry(mask).sum().item()
        assert kept == pytest.approx(full * DemoSettings.zoom**2, rel=0.02), path.name  # nothing of it cut away
        half = min(rows, columns) / DemoSettings.zoom / 2
        low, high = np.array([columns, rows]) / 2 - half, np.array([columns, rows]) / 2 + half
        margin_mm = min((outline.min(0) - low).min(), (high - outline.max(0)).min()) * spacing
        assert margin_mm >= 25, (path.name, margin_mm)


@pytest.mark.parametrize("field", [110.0, 150.0])
def test_a_field_of_view_in_mm_draws_a_real_heart_at_the_scale_its_header_states(field):
    """Cropping by millimetres rests on PixelSpacing: every expert-outlined LV epicardium of this GE study, put
    through the processor's short-axis crop of 110 mm (tight) or 150 mm (what the README suggests), covers the
    area in mm^2 that the outline covers on the scanner's own pixel grid (area x PixelSpacing^2): its scale is
    the one the header states and none of this dilated LV (EDV 230 ml) is cut away. At 150 mm, at least 20 mm
    of room remain on every side of it for the RV; at 110 mm, not."""
    from matplotlib.path import Path as Polygon

    processor = CMRStudyProcessor(num_frames=16, image_size=64, field_of_view_mm={"sax": field, "4ch": 220.0})
    contours = sorted((STUDY / "contours" / "o-contours").glob("*.txt"))
    assert len(contours) >= 10
    margins = []
    for path in contours:
        instance = int(re.search(r"IM-\d+-(\d+)-", path.name).group(1))
        header = pydicom.dcmread(STUDY / "cine" / f"{instance}.dcm", stop_before_pixels=True)
        rows, columns = int(header.Rows), int(header.Columns)
        spacing = tuple(float(v) for v in header.PixelSpacing)
        outline = np.loadtxt(path)  # "x y" pixel coordinates
        ys, xs = np.mgrid[:rows, :columns]
        inside = Polygon(outline).contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(rows, columns)
        area_mm2 = inside.sum() * spacing[0] * spacing[1]
        out = processor.transform.geometry_batch((inside * 255).astype(np.uint8)[None], spacing, processor.field_of_view_for("sax"))[0]
        assert float(out.sum()) * (field / 64) ** 2 == pytest.approx(area_mm2, rel=0.03), path.name
        reach_mm = (np.abs(outline - np.array([columns, rows]) / 2) * np.array(spacing[::-1])).max()
        margins.append(field / 2 - reach_mm)
    assert (min(margins) >= 20) == (field >= 150), margins


def test_cycle_phases_start_at_the_r_wave_frame_of_a_real_cine(study):
    """`phases="cycle"` on this GE cine: the first test-time frame is the middle slice's image with the smallest
    TriggerTime (read with pydicom from its file, the delay after the R wave: end-diastole), and the second lies
    a third of the way through the slice's trigger times, within half a phase."""
    from cmr_clip.processing import LayoutEntry, StudyLayout, select_frames

    sax = study.find("cine", "sax")
    middle = sax.grid[sax.n_slices // 2]
    triggers = sorted(float(pydicom.dcmread(f.file.path, stop_before_pixels=True).TriggerTime) for f in middle)
    step = (triggers[-1] - triggers[0]) / (len(triggers) - 1)
    layout = StudyLayout(name="t", num_frames=3, sampling="fixed",
                         entries=[LayoutEntry("cine", "sax", frames=3, phases="cycle")])
    chosen = [float(pydicom.dcmread(f.series.frame_at(f.slice_index, f.phase_index).file.path,
                                    stop_before_pixels=True).TriggerTime) for f in select_frames(study, layout).frames]
    assert chosen[0] == triggers[0]
    assert abs(chosen[1] - (triggers[0] + len(triggers) * step / 3)) <= step / 2 + 1e-6, (chosen, triggers)
