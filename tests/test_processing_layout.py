"""StudyLayout: the release's composition and 64-frame sampling, the default layout, missing-view policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmr_clip.data.augment import choose_frames
from cmr_clip.processing import CMRStudyProcessor, LayoutEntry, LayoutError, StudyLayout, plan_frames, select_frames, study_from_arrays
from cmr_clip.processing.layout import pick_slots

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
SHAPES = {  # (slices, phases)
    "cine/4ch": (1, 30),
    "cine/sax": (9, 25),
    "cine/2ch": (1, 30),
    "lge/sax": (12, 1),
    "lge/4ch": (1, 1),
    "lge/2ch": (1, 1),
    "lge/3ch": (1, 1),
}


def make_arrays(shapes=SHAPES):
    """uint8 arrays whose every frame is a constant image holding its index within the series."""
    arrays = {}
    for key, (slices, phases) in shapes.items():
        ids = np.arange(slices * phases, dtype=np.uint8).reshape(slices, phases)
        arrays[key] = np.broadcast_to(ids[:, :, None, None], (slices, phases, 16, 16)).copy()
    return arrays


def release_frames(shapes: dict) -> list:
    """The release's frame list, computed from reference-model.md independently of the package."""
    timeline = []
    if "cine/4ch" in shapes:  # the cine long-axis view: middle slice, all phases
        slices, phases = shapes["cine/4ch"]
        timeline += [("cine/4ch", slices // 2, p) for p in range(phases)]
    if "cine/sax" in shapes:  # the cine SAX stack's middle slice, all phases
        slices, phases = shapes["cine/sax"]
        timeline += [("cine/sax", slices // 2, p) for p in range(phases)]
    lge_slices = shapes["lge/sax"][0] if "lge/sax" in shapes else 0
    timeline += [("lge/sax", s, 0) for s in range(lge_slices)]
    for view in ("4ch", "2ch", "3ch"):  # LGE long axis, 2-chamber, 3-chamber, repeated per LGE SAX slice
        if f"lge/{view}" in shapes:
            timeline += [(f"lge/{view}", 0, 0)] * lge_slices
    if len(timeline) < 64:
        return timeline + [None] * (64 - len(timeline))
    bounds = [int(b) for b in np.linspace(0, len(timeline), 65)]
    return [timeline[(a + b - 1) // 2] for a, b in zip(bounds[:-1], bounds[1:])]


def selected(selection):
    return [None if f is None else (f.entry, f.slice_index, f.phase_index) for f in selection.frames]


def test_reference_layout_reproduces_the_release_frame_sequence():
    study = study_from_arrays(make_arrays())
    assert selected(select_frames(study, StudyLayout.reference())) == release_frames(SHAPES)


def test_reference_pixels_carry_the_selected_frames():
    processor = CMRStudyProcessor(layout="reference", image_size=8, resize_shortest_edge=16, crop_size=16)
    video = processor(make_arrays())["pixel_values_videos"][0]
    expected = release_frames(SHAPES)
    for t, (entry, s, p) in enumerate(expected):
        frame_id = s * SHAPES[entry][1] + p
        want = (frame_id / 255.0 - MEAN) / STD
        assert torch.allclose(video[t, :, 0, 0], torch.tensor(want, dtype=torch.float32), atol=1e-5), t


def test_reference_short_study_is_padded_with_zero_frames():
    shapes = {"cine/sax": (5, 20), "lge/sax": (6, 1), "lge/2ch": (1, 1)}
    study = study_from_arrays(make_arrays(shapes))
    selection = select_frames(study, StudyLayout.reference())
    assert selected(selection) == release_frames(shapes)
    assert selection.frames[32] is None and "cine/4ch" in selection.missing
    assert any("zero frames appended" in w for w in selection.warnings)


def test_training_sampling_takes_one_random_frame_per_segment():
    study = study_from_arrays(make_arrays())
    timeline_length = 30 + 25 + 12 + 36
    bounds = [int(b) for b in np.linspace(0, timeline_length, 65)]
    a = selected(select_frames(study, StudyLayout.reference(), rng=np.random.default_rng(1)))
    b = selected(select_frames(study, StudyLayout.reference(), rng=np.random.default_rng(2)))
    assert a != b
    middle = release_frames(SHAPES)
    assert a != middle
    # every pick stays in its segment: the sequence of entries is monotone like the timeline's
    order = ["cine/4ch", "cine/sax", "lge/sax", "lge/4ch", "lge/2ch", "lge/3ch"]
    assert [order.index(x[0]) for x in a] == sorted(order.index(x[0]) for x in a)
    assert len(bounds) == 65


def test_default_layout_adds_up_and_fills_missing_views():
    layout = StudyLayout.default(16)
    assert sum(e.frames for e in layout.entries) == 16
    study = study_from_arrays(make_arrays({"cine/sax": (8, 20), "cine/4ch": (1, 20)}))
    selection = select_frames(study, layout)
    assert len(selection.frames) == 16 and all(f is not None for f in selection.frames)
    assert {f.entry for f in selection.frames} == {"cine/sax", "cine/4ch"}
    assert set(selection.missing) == {"cine/2ch", "cine/3ch", "lge/sax", "lge/4ch", "lge/2ch"}
    assert any("filled from" in w for w in selection.warnings)
    phases = [f.phase_index for f in selection.frames if f.entry == "cine/sax"]
    assert phases == sorted(phases) and len(set(phases)) == len(phases)  # spread over the cycle


def test_default_layout_never_shows_one_image_twice_and_samples_the_lge_stack():
    """With every view present, no two of the 16 frames are the same image (a single LGE long-axis image is
    shown once), and the LGE short-axis frames are different slices spread from base to apex."""
    shapes = {**SHAPES, "cine/3ch": (1, 30)}
    selection = select_frames(study_from_arrays(make_arrays(shapes)), StudyLayout.default(16))
    images = [(f.entry, f.slice_index, f.phase_index) for f in selection.frames]
    assert len(images) == 16 and len(set(images)) == 16, images
    lge_slices = [f.slice_index for f in selection.frames if f.entry == "lge/sax"]
    assert len(lge_slices) >= 4 and lge_slices == sorted(set(lge_slices))
    assert lge_slices[0] < shapes["lge/sax"][0] / 4 and lge_slices[-1] >= 3 * shapes["lge/sax"][0] / 4


def test_zeros_policy_leaves_missing_slots_empty():
    layout = StudyLayout(
        name="custom", num_frames=6, sampling="fixed", missing="zeros",
        entries=[LayoutEntry("cine", "sax", frames=4), LayoutEntry("lge", "sax", frames=2, slices="all", phases="first")],
    )
    selection = select_frames(study_from_arrays(make_arrays({"cine/sax": (3, 10)})), layout)
    assert selected(selection)[4:] == [None, None]


def test_layouts_round_trip_through_the_processor_config(tmp_path):
    layout = StudyLayout(
        name="mine", num_frames=3, sampling="fixed", missing="fill",
        entries=[LayoutEntry("cine", "sax", frames=2), LayoutEntry("cine", "2ch", frames=1)],
    )
    CMRStudyProcessor(layout=layout, image_size=32).save_pretrained(tmp_path)
    loaded = CMRStudyProcessor.from_pretrained(tmp_path)
    assert loaded.study_layout == layout and loaded.image_size == 32
    reference = CMRStudyProcessor(layout="reference")
    assert (reference.num_frames, reference.resize_shortest_edge, reference.crop_size, reference.image_size) == (64, 256, 256, 224)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sampling="fixed", entries=[LayoutEntry("cine", "sax", frames=3)]),
        dict(sampling="fixed", entries=[LayoutEntry("cine", "axial", frames=4)]),
        dict(sampling="sideways", entries=[LayoutEntry("cine", "sax", frames=4)]),
        dict(sampling="fixed", entries=[LayoutEntry("cine", "sax", frames=4, phases="odd")]),
    ],
)
def test_malformed_layouts_raise_layout_error(kwargs):
    with pytest.raises(LayoutError):
        StudyLayout(name="bad", num_frames=4, **kwargs)


def test_slot_rule_takes_the_middle_or_a_member_and_empty_slots_give_none():
    slots = [(0, 4), (4, 6), (6, 6), (6, 10)]
    assert pick_slots(slots) == [1, 4, None, 7]
    for seed in range(20):
        a, b, empty, c = pick_slots(slots, np.random.default_rng(seed))
        assert 0 <= a < 4 and 4 <= b < 6 and empty is None and 6 <= c < 10


def test_processor_and_training_data_draw_the_same_frames_from_one_seed():
    """The processor's training selection and the prepared corpus' draw (`choose_frames`) share one rule."""
    processor = CMRStudyProcessor(layout="reference", image_size=16)
    frames, slots, _ = processor.compact(make_arrays())
    plan = plan_frames(study_from_arrays(make_arrays()), processor.study_layout)
    position = {id(item): i for i, item in enumerate(plan.timeline)}
    for seed in range(3):
        selected = plan.select(np.random.default_rng(seed)).frames
        expected = np.stack([np.zeros_like(frames[0]) if item is None else frames[position[id(item)]] for item in selected])
        drawn = choose_frames(torch.from_numpy(frames), torch.from_numpy(slots), np.random.default_rng(seed))
        assert np.array_equal(drawn.numpy(), expected)


def test_arrays_report_their_shape_and_no_spacing():
    arrays = {"cine/sax": np.zeros((3, 5, 20, 12), np.uint8), "lge/sax": np.zeros((4, 20, 12), np.uint8)}
    entries = CMRStudyProcessor(image_size=8)(arrays)["study_metadata"][0]["series"]
    assert [(e["spatial_shape"], e["pixel_spacing"], e["output_pixel_spacing"]) for e in entries] == [([20, 12], None, None)] * 2


def _trigger_time(frame) -> float:
    """The frame's trigger delay after the R wave, read with pydicom from its file (not through our reader):
    TriggerTime, or the Enhanced MR per-frame NominalCardiacTriggerDelayTime."""
    import pydicom

    ds = pydicom.dcmread(frame.file.path)
    if frame.frame_index is None:
        return float(ds.TriggerTime)
    return float(ds.PerFrameFunctionalGroupsSequence[frame.frame_index].CardiacSynchronizationSequence[0]
                 .NominalCardiacTriggerDelayTime)


@pytest.mark.parametrize("style", ["siemens", "ge", "philips"])
def test_cycle_phases_show_end_diastole_and_equal_shares_of_the_cycle_after_it(style, tmp_path):
    """A cine's frames follow the ECG: the first is triggered on the R wave (end-diastole) and the others at
    later delays. With `cycle`, the test-time frames of an entry are the R-wave frame and frames 1/k, 2/k...
    of the cycle later (k its frames), read from each file's own trigger time; with `all` none is the R-wave
    frame. Vendors order and split their files differently (one series per slice, multi-frame files)."""
    from processing_factory import write_study

    from cmr_clip.processing import read_study

    write_study(tmp_path, style=style, n_slices=3, n_phases=12, seed=4)
    study = read_study(tmp_path)
    sax = study.find("cine", "sax")
    middle = [_trigger_time(frame) for frame in sax.grid[sax.n_slices // 2]]
    first, cycle = min(middle), (max(middle) - min(middle)) * len(middle) / (len(middle) - 1)
    for policy, starts_at_the_r_wave in (("cycle", True), ("all", False)):
        layout = StudyLayout(name="t", num_frames=7, sampling="fixed", entries=[
            LayoutEntry("cine", "sax", frames=3, phases=policy), LayoutEntry("cine", "4ch", frames=4, phases=policy)])
        frames = select_frames(study, layout).frames
        for entry, count in (("cine/sax", 3), ("cine/4ch", 4)):
            shares = [(_trigger_time(f.series.frame_at(f.slice_index, f.phase_index)) - first) / cycle
                      for f in frames if f.entry == entry]
            if starts_at_the_r_wave:
                step = 1 / len(middle)  # one phase: the k shares cannot all be exact with 12 phases
                assert shares[0] == 0.0, (entry, shares)
                assert all(abs(share - i / count) <= step / 2 + 1e-9 for i, share in enumerate(shares)), (entry, shares)
            else:
                assert min(shares) > 0, (entry, shares)


def test_cycle_with_more_frames_than_phases_and_with_the_random_training_pick():
    """Fewer phases than frames: every phase, in order, from end-diastole. Training draws stay within the
    cycle's segments: the first segment holds end-diastole and the late-diastolic phases before it."""
    layout = StudyLayout(name="t", num_frames=4, sampling="fixed",
                         entries=[LayoutEntry("cine", "sax", frames=4, phases="cycle")])
    short = select_frames(study_from_arrays(make_arrays({"cine/sax": (1, 3)})), layout)
    phases = [f.phase_index for f in short.frames]
    assert phases[0] == 0 and phases == sorted(phases) and set(phases) == {0, 1, 2}
    plan = plan_frames(study_from_arrays(make_arrays({"cine/sax": (1, 20)})), layout)
    first = {plan.timeline[i].phase_index for i in range(*plan.slots[0])}
    assert 0 in first and first <= {0, 1, 2, 17, 18, 19}


def test_cycle_needs_one_slice_and_fixed_sampling():
    with pytest.raises(LayoutError, match="cycle"):
        StudyLayout(name="t", num_frames=4, sampling="fixed",
                    entries=[LayoutEntry("cine", "sax", frames=4, slices="all", phases="cycle")])
    with pytest.raises(LayoutError, match="cycle"):
        StudyLayout(name="t", num_frames=4, sampling="segments", entries=[LayoutEntry("cine", "sax", phases="cycle")])


def test_the_default_layout_can_place_its_cine_frames_on_the_cycle():
    plain, cycle = StudyLayout.default(16), StudyLayout.default(16, cine_phases="cycle")
    assert [(e.key, e.frames, e.slices) for e in cycle.entries] == [(e.key, e.frames, e.slices) for e in plain.entries]
    assert {e.phases for e in cycle.entries if e.sequence == "cine"} == {"cycle"}
    assert [e.phases for e in cycle.entries if e.sequence == "lge"] == [e.phases for e in plain.entries if e.sequence == "lge"]
    assert StudyLayout.from_dict(cycle.to_dict()) == cycle
    with pytest.raises(LayoutError, match="cine_phases"):
        StudyLayout.default(16, cine_phases="first")
