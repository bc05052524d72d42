"""CMRStudyProcessor and CMRCLIPProcessor: pixels, batching, errors, save/load, AutoProcessor."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from transformers import AutoProcessor, BertTokenizer

from cmr_clip.processing import (
    CMRCLIPProcessor,
    CMRStudyProcessor,
    NoUsableCineError,
    UnsupportedCompressionError,
    read_study,
)
from cmr_clip.processing.pixels import FrameTransform, decode_frame, window_to_uint8
from processing_factory import write_study

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "normal", "lv", "function", "reduced", "ef", "scar"]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("proc") / "study"
    write_study(root, style="siemens", n_slices=4, n_phases=6, seed=3)
    return root


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)})


def test_transform_resizes_short_side_crops_centre_and_normalises():
    image = np.zeros((40, 80), np.uint8)
    image[:, 20:60] = 255  # the centre square is bright, the sides dark
    out = FrameTransform(image_size=16, resize_shortest_edge=32, crop_size=32)(image)
    assert out.shape == (3, 16, 16)
    white = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out[:, 2:-2, 2:-2], white[:, None, None].expand(3, 12, 12), atol=1e-4)


def _disc(rows: int, cols: int, spacing: tuple[float, float], radius_mm: float) -> np.ndarray:
    """A bright disc of `radius_mm` at the image centre, drawn in millimetres: `spacing` is DICOM PixelSpacing,
    the distance between rows first, then between columns."""
    y = (np.arange(rows) - (rows - 1) / 2) * spacing[0]
    x = (np.arange(cols) - (cols - 1) / 2) * spacing[1]
    return ((y[:, None] ** 2 + x[None, :] ** 2 <= radius_mm**2) * 255).astype(np.uint8)


@pytest.mark.parametrize("rows, cols, spacing", [(256, 256, (1.0, 1.0)), (192, 256, (1.25, 1.25)),
                                                 (120, 200, (2.0, 1.25)), (60, 60, (2.5, 2.5))])
def test_field_of_view_draws_every_scanner_geometry_at_one_scale(rows, cols, spacing):
    """A 40 mm disc covers pi * 20^2 mm^2 whatever the matrix, spacing (anisotropic included) and field of view
    it was acquired with: at field_of_view_mm = 100 in 50 px (2 mm per pixel) it covers pi * 10^2 px, centred,
    and round (as many rows as columns). The 60 x 60 image at 2.5 mm is a 150 mm field: cropped, not padded."""
    image = _disc(rows, cols, spacing, 20.0)
    out = FrameTransform(image_size=50, field_of_view_mm=100.0).geometry(image, spacing)
    assert out.shape == (50, 50)
    assert float(out.sum()) == pytest.approx(np.pi * 10**2, rel=0.04)
    ys, xs = np.nonzero(out.numpy() > 0.5)
    assert abs(ys.mean() - 24.5) < 0.6 and abs(xs.mean() - 24.5) < 0.6
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1


def test_field_of_view_keeps_the_image_centre_where_the_window_cannot_be_exact():
    """83.3 columns (100 mm at 1.2 mm) cannot be cut from 200 exactly: the window stays centred (a disc drawn at
    the image's centre stays at the frame's) and its scale stays within a source pixel (1.2 %)."""
    image = _disc(120, 200, (2.0, 1.2), 20.0)
    out = FrameTransform(image_size=50, field_of_view_mm=100.0).geometry(image, (2.0, 1.2)).numpy()
    ys, xs = np.nonzero(out > 0.5)
    assert abs(ys.mean() - 24.5) < 0.1 and abs(xs.mean() - 24.5) < 0.1
    assert float(out.sum()) == pytest.approx(np.pi * 10**2, rel=0.04)


def test_field_of_view_larger_than_the_image_pads_with_zeros_and_keeps_the_scale():
    """A 64 mm wide image (64 px at 1 mm) in a 128 mm field fills the middle half of the frame; the rest is zero."""
    image = np.full((64, 64), 200, np.uint8)
    out = FrameTransform(image_size=32, field_of_view_mm=128.0).geometry(image, (1.0, 1.0))
    assert float(out[9:23, 9:23].min()) == pytest.approx(200 / 255, abs=1e-3)
    assert float(out[:7].max()) == 0 and float(out[:, 25:].max()) == 0
    assert FrameTransform(image_size=32, field_of_view_mm=128.0).output_spacing((64, 64), (1.0, 1.0)) == (4.0, 4.0)


def test_field_of_view_without_a_spacing_falls_back_to_the_pixel_crop():
    image = np.zeros((40, 80), np.uint8)
    image[:, 20:60] = 255
    by_pixels = FrameTransform(image_size=16, resize_shortest_edge=32, crop_size=32)
    by_mm = FrameTransform(image_size=16, resize_shortest_edge=32, crop_size=32, field_of_view_mm=500.0)
    assert torch.equal(by_mm.geometry(image), by_pixels.geometry(image))
    assert by_mm.output_spacing((40, 80), None) is None


@pytest.mark.parametrize("value, message", [(0, "positive"), (-5.0, "positive"), ("120", "positive"), (True, "positive"),
                                            ({"axial": 120.0}, "unknown views ['axial']"), ({"sax": 0}, "positive")])
def test_field_of_view_rejects_what_is_not_a_size_in_mm(value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CMRStudyProcessor(num_frames=16, image_size=32, field_of_view_mm=value)


def test_field_of_view_by_view_crops_each_view_at_its_own_size_and_round_trips(study_dir, tmp_path):
    """Short-axis frames at 120 mm, long-axis at 240 mm: the metadata states each series' output spacing, the
    frames differ from a crop of 120 mm everywhere, and the setting survives save/load."""
    fields = {"sax": 120.0, "2ch": 240.0, "3ch": 240.0, "4ch": 240.0}
    processor = CMRStudyProcessor(num_frames=16, image_size=32, field_of_view_mm=fields)
    batch = processor(str(study_dir))
    spacing = [(s["view"], s["output_pixel_spacing"]) for s in batch["study_metadata"][0]["series"]]
    assert {view for view, _ in spacing} >= {"sax", "2ch", "3ch", "4ch"}
    assert all(mm == [120 / 32] * 2 for view, mm in spacing if view == "sax")
    assert all(mm == [240 / 32] * 2 for view, mm in spacing if view in ("2ch", "3ch", "4ch"))
    processor.save_pretrained(tmp_path)
    loaded = CMRStudyProcessor.from_pretrained(tmp_path)
    assert loaded.field_of_view_mm == fields
    assert torch.equal(loaded(str(study_dir))["pixel_values_videos"], batch["pixel_values_videos"])
    uniform = CMRStudyProcessor(num_frames=16, image_size=32, field_of_view_mm=120.0)
    assert not torch.equal(uniform(str(study_dir))["pixel_values_videos"], batch["pixel_values_videos"])


def test_window_maps_robust_range_to_8_bit():
    rng = np.random.default_rng(0)
    images = [rng.normal(1000, 100, (32, 32)).astype(np.float32) for _ in range(3)]
    images[0][0, 0] = 1e6  # one outlier does not set the window
    out = window_to_uint8(images)
    assert all(o.dtype == np.uint8 for o in out)
    assert 100 < np.median(np.concatenate([o.ravel() for o in out])) < 155
    assert out[0][0, 0] == 255


def test_rescale_and_monochrome1_are_applied(study_dir, tmp_path):
    path = next(study_dir.rglob("lge_0.dcm"))
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.save_as(tmp_path / "rescaled.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "inverted.dcm")
    raw = ds.pixel_array.astype(np.float32)
    study = read_study([tmp_path / "rescaled.dcm", tmp_path / "inverted.dcm"])
    frames = {f.file.name: f for s in study.series for f in s.frames}
    rescaled, inverted = decode_frame(frames["rescaled.dcm"]), decode_frame(frames["inverted.dcm"])
    assert np.allclose(rescaled, raw * 2 - 100)
    assert np.allclose(inverted, rescaled.max() + rescaled.min() - rescaled)


def test_one_study_and_a_batch_with_a_bad_one(study_dir, tmp_path):
    processor = CMRStudyProcessor(num_frames=8, image_size=32)
    single = processor(str(study_dir))
    assert single["pixel_values_videos"].shape == (1, 8, 3, 32, 32)
    (tmp_path / "junk.txt").write_text("no images")
    lge_only = {"lge/sax": np.zeros((4, 16, 16), np.uint8)}
    batch = processor([study_dir, tmp_path, lge_only, read_study(study_dir)], skip_errors=True)
    assert batch["pixel_values_videos"].shape == (2, 8, 3, 32, 32)
    assert [e["index"] for e in batch["errors"]] == [1, 2]
    assert [e["error"] for e in batch["errors"]] == ["NotAStudyError", "NoUsableCineError"]
    assert torch.equal(batch["pixel_values_videos"][0], batch["pixel_values_videos"][1])
    meta = batch["study_metadata"][0]
    assert meta["views_found"]["cine"] and meta["num_frames"] == 8 and len(meta["frames_used"]) == 8
    with pytest.raises(NoUsableCineError, match="overrides="):
        processor(lge_only)


def test_missing_decoder_names_the_extra(monkeypatch):
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    study = read_study([path])

    class Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    with pytest.raises(UnsupportedCompressionError, match=r"cmr-clip\[dicom-codecs\]") as error:
        decode_frame(study.series[0].first_frame)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    # named by its place in the study, never by its file name (exports name files after patients)
    assert f"series {header.SeriesNumber}, instance {header.InstanceNumber}" in str(error.value)
    assert "MR_small_jpeg_ls_lossless" not in str(error.value)


def test_arrays_per_view_for_preprocessed_data():
    arrays = {"cine/sax": np.random.default_rng(0).integers(0, 4000, (6, 10, 24, 24)), ("cine", "4ch"): np.zeros((10, 24, 24))}
    out = CMRStudyProcessor(num_frames=8, image_size=16)(arrays)
    meta = out["study_metadata"][0]
    assert out["pixel_values_videos"].shape == (1, 8, 3, 16, 16)
    assert meta["views_found"] == {"cine": ["sax", "4ch"]}
    assert {f["entry"] for f in meta["frames_used"]} == {"cine/sax", "cine/4ch"}


def test_clip_processor_text_and_studies_save_and_auto_load(study_dir, tokenizer, tmp_path):
    processor = CMRCLIPProcessor(tokenizer=tokenizer, feature_extractor=CMRStudyProcessor(num_frames=8, image_size=32))
    out = processor(text=["normal lv function", "reduced ef", "scar"], studies=[study_dir, tmp_path, study_dir], skip_errors=True)
    assert out["pixel_values_videos"].shape == (2, 8, 3, 32, 32)
    assert out["input_ids"].shape[0] == 2  # the skipped study's text is dropped too
    assert out["input_ids"][1, 1].item() == VOCAB.index("scar")
    processor.save_pretrained(tmp_path / "saved")
    loaded = AutoProcessor.from_pretrained(tmp_path / "saved")
    assert isinstance(loaded, CMRCLIPProcessor)
    assert loaded.feature_extractor.layout == processor.feature_extractor.layout
    assert loaded.tokenizer.tokenize("normal lv") == ["normal", "lv"]
    again = loaded(text=["normal lv function"], studies=study_dir)
    assert torch.equal(again["pixel_values_videos"][0], out["pixel_values_videos"][0])


def test_training_draws_seeded_random_frames_per_segment():
    arrays = {"cine/4ch": np.arange(30, dtype=np.uint8)[:, None, None].repeat(8, 1).repeat(8, 2),
              "cine/sax": np.arange(9 * 60, dtype=np.uint16).reshape(9, 60, 1, 1).repeat(8, 2).repeat(8, 3)}
    processor = CMRStudyProcessor(layout="reference", image_size=8, resize_shortest_edge=8, crop_size=8)

    def phases(**kwargs):
        return [(f["entry"], f["phase"]) for f in processor(arrays, **kwargs)["study_metadata"][0]["frames_used"]]

    test_time = phases()
    assert phases(training=True, seed=1) == phases(training=True, seed=1)
    assert phases(training=True, seed=1) != phases(training=True, seed=2)
    assert phases(training=True, seed=1) != test_time
    assert test_time == phases()
