"""`CMRStudyProcessor`: studies (DICOM folders, zips, `Study` objects or arrays per view) to model inputs.

A transformers feature extractor (no torchvision needed), so it saves to and loads from
`preprocessor_config.json` with `save_pretrained` / `from_pretrained` and sits in `CMRCLIPProcessor`'s
`feature_extractor` slot. Its output is `pixel_values_videos` (batch, frames, 3, height, width) and, per
study, metadata free of patient identifiers: views found, frames used, missing views, warnings, and each
series' shape and pixel spacing as read and the spacing of the output pixels (see `study_metadata`).

Multi-study sources: a call gives one row per input, so a source holding several studies is a
`MultipleStudiesError` for that input (reported and skipped under `skip_errors`) unless `study=` picks one;
with `expand_studies=True` every study of a source becomes its own row instead. Either way each row's
metadata carries `index` (the input) and `study` (the study's key), and no row mixes two studies.

Bad frames: a selected frame whose pixel data cannot be decoded is replaced by the nearest decodable frame
of the same slice, then of the same series, with a warning; a series with no decodable frame is set aside,
so its views count as missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

from ..vocabulary import MODEL_SEQUENCES, VIEWS
from .decoding import decode_selected, frame_key
from .dicomweb import as_dicomweb_source
from .errors import CMRStudyError, NoUsableCineError, UnreadableSeriesError
from .layout import Selection, StudyLayout, plan_frames, select_frames
from .pixels import IMAGENET_MEAN, IMAGENET_STD, ArrayFrame, FrameTransform
from .reader import list_studies, read_study
from .study import Series, Study

logger = logging.getLogger(__name__)
# The release resizes the short side to 256, centre-crops 256 and resizes to 224 at test time.
REFERENCE_RESIZE = 256


class CMRStudyProcessor(FeatureExtractionMixin):
    """Turns cardiac MRI studies into `pixel_values_videos` following a `StudyLayout`.

    Args:
        layout: "default" (fixed proportions of `num_frames`, missing views filled from present ones),
            "reference" (the released model's 64-frame composition and sampling), a `StudyLayout`, or its dict.
        num_frames: frames per study for the default layout (16 unless given).
        image_size: output height and width.
        resize_shortest_edge, crop_size: the short side is resized to `resize_shortest_edge`, then a centre
            square of `crop_size` is cut and resized to `image_size` (both default to `image_size`; 256 and 256
            for the reference layout).
        image_mean, image_std: per-channel normalisation of the [0, 1] grey values replicated to 3 channels.
        field_of_view_mm: crop by physical size instead: the centred square of this many millimetres of every
            image with a PixelSpacing (zero beyond its edges) becomes the `image_size` frame, so that a heart is
            drawn at one scale whatever each scanner's field of view and matrix (field_of_view_mm / image_size
            mm per pixel). A number for every view, or a mapping by view ("sax", "2ch", "3ch", "4ch"): a
            short-axis plane cuts the heart across (150 mm holds a dilated LV and its RV), a long-axis plane
            along its length, atria and aortic root included (about 220 mm). Views the mapping leaves out, and
            images without a spacing (arrays), use `resize_shortest_edge` and `crop_size`.
    """

    model_input_names = ["pixel_values_videos"]

    def __init__(
        self,
        layout: str | dict | StudyLayout = "default",
        num_frames: int | None = None,
        image_size: int = 224,
        resize_shortest_edge: int | None = None,
        crop_size: int | None = None,
        image_mean: tuple[float, float, float] = IMAGENET_MEAN,
        image_std: tuple[float, float, float] = IMAGENET_STD,
        field_of_view_mm: float | dict[str, float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        resolved = _resolve_layout(layout, num_frames)
        if resolved.name == "reference" and resize_shortest_edge is None and crop_size is None:
            resize_shortest_edge, crop_size = REFERENCE_RESIZE, REFERENCE_RESIZE
        self.layout = resolved.to_dict()
        self.image_size = int(image_size)
        self.resize_shortest_edge = resize_shortest_edge
        self.crop_size = crop_size
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.field_of_view_mm = check_field_of_view(field_of_view_mm)

    @property
    def study_layout(self) -> StudyLayout:
        return StudyLayout.from_dict(self.layout)

    @property
    def num_frames(self) -> int:
        return self.layout["num_frames"]

    @property
    def transform(self) -> FrameTransform:
        field = self.field_of_view_mm if not isinstance(self.field_of_view_mm, dict) else None
        return FrameTransform(self.image_size, self.resize_shortest_edge, self.crop_size, tuple(self.image_mean),
                              tuple(self.image_std), field)

    def field_of_view_for(self, view: str) -> float | None:
        """The field of view (mm) cropped from images of `view`; None: the pixel-based crop."""
        if isinstance(self.field_of_view_mm, dict):
            return self.field_of_view_mm.get(view)
        return self.field_of_view_mm

    def frame_geometry(self, selection: Selection) -> dict:
        """`spacings` and `fields` of `FrameTransform.geometry_all` for the selected frames: each frame's
        PixelSpacing (None when unknown) and its view's field of view."""
        spacings, fields = {}, {}
        for item in selection.frames:
            if item is not None:
                key = frame_key(item)
                spacings[key] = getattr(item.series.frame_at(item.slice_index, item.phase_index), "pixel_spacing", None)
                fields[key] = self.field_of_view_for(item.series.view)
        return {"spacings": spacings, "fields": fields}

    def __call__(
        self,
        studies,
        return_tensors: str | None = "pt",
        skip_errors: bool = False,
        training: bool = False,
        seed: int | None = None,
        overrides: dict | None = None,
        study: int | str | None = None,
        expand_studies: bool = False,
    ) -> BatchFeature:
        """Process one study or a list of studies.

        A study is a path (folder, zip), a DICOMweb source (`DICOMwebServer.study(uid)` or `.query(...)`), a `Study`, or a dict of arrays per view (see `study_from_arrays`).
        A path holding several studies raises `MultipleStudiesError` unless `study` picks one (index,
        StudyInstanceUID or key, as in `read_study`) or `expand_studies` makes each study its own row.
        With `skip_errors`, a study that raises a `CMRStudyError` is left out of the batch and reported in
        `errors` (its input's position, its study key when known, and the message); otherwise the error
        propagates. `training` picks a random frame per segment of the reference layout (seeded by `seed`)
        instead of the middle one.
        """
        items = studies if isinstance(studies, (list, tuple)) else [studies]
        rng = np.random.default_rng(seed) if training else None
        videos, metadata, errors = [], [], []
        for index, item in enumerate(items):
            for labels, load in self._study_loaders(item, overrides, study, expand_studies):
                try:
                    video, meta = self.process_study(load(), rng=rng)
                except CMRStudyError as error:
                    if not skip_errors:
                        raise
                    logger.warning("study %d skipped: %s", index, error)
                    errors.append({"index": index, **labels, "error": type(error).__name__, "message": str(error)})
                    continue
                videos.append(video)
                metadata.append({**meta, "index": index, **labels})
        empty = torch.zeros(0, self.num_frames, 3, self.image_size, self.image_size)
        pixel_values = torch.stack(videos) if videos else empty
        if return_tensors != "pt":
            pixel_values = pixel_values.numpy()
        data = {"pixel_values_videos": pixel_values, "study_metadata": metadata, "errors": errors}
        return BatchFeature(data=data, skip_tensor_conversion=["study_metadata", "errors"])

    def _study_loaders(self, item, overrides, study, expand_studies: bool) -> list[tuple[dict, Callable[[], Study]]]:
        """(labels for the output, a function loading the study) per study of one input."""
        remote = as_dicomweb_source(item)
        if not (expand_studies and (remote is not None or isinstance(item, (str, os.PathLike)))):
            return [({}, partial(self.load_study, item, overrides=overrides, study=study))]
        try:
            found = list_studies(remote or Path(item))
        except CMRStudyError as error:
            return [({}, partial(_raise, error))]
        return [({"study": part.key, "study_index": part.index}, partial(part.read, overrides)) for part in found]

    def process_study(self, item, rng: np.random.Generator | None = None, overrides: dict | None = None,
                      study: int | str | None = None) -> tuple[torch.Tensor, dict]:
        """One study -> (frames (T, 3, H, W), metadata)."""
        loaded = self.load_study(item, overrides=overrides, study=study)
        _require_cine(loaded)
        layout = self.study_layout
        selection, images = select_and_decode(loaded, lambda s: select_frames(s, layout, rng=rng))
        return self.images_to_tensor(selection, images), study_metadata(loaded, selection, self.transform, self.field_of_view_for)

    def compact(self, item, overrides: dict | None = None, study: int | str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
        """A study stored compactly for training: the layout's candidate frames as uint8 (L, H, W), after
        windowing, resize and crop but before normalisation; the slot ranges (T, 2) into them (see
        `FramePlan`); and the metadata of the test-time selection. `normalise` turns chosen frames into
        model input. `study` picks one study of a multi-study source, as in `read_study`."""
        loaded = self.load_study(item, overrides=overrides, study=study)
        _require_cine(loaded)
        layout = self.study_layout
        decoded, images = select_and_decode(loaded, lambda s: Selection(layout=layout.name, frames=list(plan_frames(s, layout).timeline)))
        plan = plan_frames(loaded, layout)
        transform = self.transform
        resized = transform.geometry_all(images, **self.frame_geometry(decoded))
        size = (self.image_size, self.image_size)
        frames = np.stack([resized[frame_key(item)].numpy() for item in plan.timeline]) if plan.timeline else np.zeros((0, *size), np.uint8)
        selection = plan.select()
        selection.warnings.extend(decoded.warnings)
        return frames, np.asarray(plan.slots, dtype=np.int32).reshape(-1, 2), study_metadata(loaded, selection, self.transform, self.field_of_view_for)

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (..., H, W) from `compact` -> normalised (..., 3, H, W); all-zero frames (the
        layout's zero frames) stay zero, as the release's padding frames were."""
        out = self.transform.normalise(frames.float() / 255.0)
        padding = (frames.flatten(-2) == 0).all(-1)
        return out.masked_fill(padding[..., None, None, None], 0.0)

    @staticmethod
    def load_study(item, overrides: dict | None = None, study: int | str | None = None) -> Study:
        if isinstance(item, Study):
            return item
        if isinstance(item, dict):
            return study_from_arrays(item)
        if as_dicomweb_source(item) is not None:
            return read_study(item, overrides=overrides, study=study)
        if isinstance(item, (str, os.PathLike)):
            return read_study(Path(item), overrides=overrides, study=study)
        raise TypeError(f"a study is a path, a Study or a dict of arrays per view, not {type(item).__name__}")

    def images_to_tensor(self, selection: Selection, images: dict) -> torch.Tensor:
        """The selection's decoded 8-bit `images` transformed, in order; zero frames where nothing was selected."""
        transform = self.transform
        cache = transform.transform_all(images, **self.frame_geometry(selection))
        frames = [transform.zeros() if item is None else cache[frame_key(item)] for item in selection.frames]
        return torch.stack(frames)


def check_field_of_view(value) -> float | dict[str, float] | None:
    """`field_of_view_mm` checked: None, a positive number, or {view: positive number} for known views."""
    if value is None:
        return None
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(VIEWS))
        if unknown:
            raise ValueError(f"field_of_view_mm: unknown views {unknown}; views are {list(VIEWS)}")
        return {view: check_field_of_view(mm) for view, mm in value.items()}
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"field_of_view_mm must be a positive number of millimetres or a mapping by view, got {value!r}")
    return float(value)


def _raise(error: Exception):
    raise error


def select_and_decode(study: Study, select: Callable[[Study], Selection]) -> tuple[Selection, dict]:
    """`select(study)` and its decoded images (see `decode_selected`). A series found to have no decodable
    frame is set aside, so that its views count as missing, and the frames are selected again."""
    notes = []
    while True:
        selection = select(study)
        try:
            images = decode_selected(selection)
        except UnreadableSeriesError as error:
            error.series.used = False
            error.series.reasons.append("set aside: no frame's pixel data can be decoded")
            notes.append(f"series {error.series.series_number} set aside: no frame's pixel data can be decoded")
            _require_cine(study)
            continue
        selection.warnings.extend(notes)
        return selection, images


def _resolve_layout(layout, num_frames: int | None) -> StudyLayout:
    if isinstance(layout, StudyLayout):
        return layout
    if isinstance(layout, dict):
        return StudyLayout.from_dict(layout)
    return StudyLayout.named(layout, num_frames)


def _require_cine(study: Study) -> None:
    if any(s.used and s.sequence == "cine" for s in study.series):
        return
    found = ", ".join(f"series {s.series_number} ({s.role})" for s in study.series) or "none"
    raise NoUsableCineError(
        f"the study has no cine series (series: {found}). If a cine series was misclassified, "
        "pass overrides={'<description pattern or SeriesInstanceUID>': ('cine', '<view>')}."
    )


def study_metadata(study: Study, selection: Selection, transform: FrameTransform,
                   field_of_view_for: Callable[[str], float | None] | None = None) -> dict:
    """What was found and used, without identifiers (no UIDs, no paths, no patient or date fields) and without
    free text (series descriptions stay out: sites type anything into them); `study` is the study's key, a
    short hash of its StudyInstanceUID.

    Each series carries its spatial metadata as MONAI's readers return it beside the pixels: `spatial_shape`
    (rows, columns as read), `pixel_spacing` (mm, row and column, as read from PixelSpacing; None when the
    header has none or the study was given as arrays) and `output_pixel_spacing` (mm per pixel of the
    model input after `transform`'s resize and crop)."""
    return {
        "study": study.key,
        "layout": selection.layout,
        "num_frames": len(selection.frames),
        "views_found": study.views_found,
        "missing_views": selection.missing,
        "frames_used": selection.as_metadata(),
        "zero_frames": sum(item is None for item in selection.frames),
        "warnings": list(selection.warnings),
        "series": [
            {
                "series_number": s.series_number,
                "sequence": s.sequence,
                "view": s.view,
                "role": s.role,
                "n_slices": s.n_slices,
                "n_phases": s.n_phases,
                "confidence": s.confidence,
                "used": s.used,
                **_spatial_metadata(s, transform, field_of_view_for(s.view) if field_of_view_for else None),
            }
            for s in study.series
        ],
        "files_skipped": len(study.skipped),
    }


def _spatial_metadata(series: Series, transform: FrameTransform, field_of_view_mm: float | None = None) -> dict:
    frame = series.first_frame
    if isinstance(frame, ArrayFrame):
        shape, spacing = tuple(frame.pixels.shape[:2]), None
    else:
        shape, spacing = (frame.rows, frame.columns), frame.pixel_spacing
    output = transform.output_spacing(shape, spacing, field_of_view_mm)
    return {
        "spatial_shape": [int(n) for n in shape],
        "pixel_spacing": None if spacing is None else [float(v) for v in spacing],
        "output_pixel_spacing": None if output is None else list(output),
    }


def study_from_arrays(views: dict) -> Study:
    """A `Study` from preprocessed arrays, keyed "cine/sax" or ("cine", "sax").

    Shapes: (slices, phases, H, W); (phases, H, W) for a cine slice or (slices, H, W) for an LGE stack;
    (H, W) for one image. Slices base to apex, phases in time order.
    """
    series = []
    for number, (key, array) in enumerate(views.items(), start=1):
        sequence, view = key.split("/") if isinstance(key, str) else key
        if sequence not in MODEL_SEQUENCES or view not in VIEWS:
            raise CMRStudyError(f"array key {key!r}: expected 'sequence/view' with sequence in {MODEL_SEQUENCES} and view in {VIEWS}")
        grid = _array_grid(np.asarray(array), sequence, f"{sequence}/{view}")
        item = Series(series_instance_uid="", series_number=number, description=f"{sequence}/{view} (array)", grid=grid)
        item.sequence, item.view, item.role, item.confidence = sequence, view, sequence, 1.0
        item.reasons.append("given as an array by the user")
        series.append(item)
    return Study(series=series)


def _array_grid(array: np.ndarray, sequence: str, label: str) -> list[list[ArrayFrame]]:
    if array.ndim == 2:
        array = array[None, None]
    elif array.ndim == 3:
        array = array[None] if sequence == "cine" else array[:, None]
    elif array.ndim != 4:
        raise CMRStudyError(f"array {label}: expected 2 to 4 dimensions (slices, phases, H, W), got shape {array.shape}")
    return [[ArrayFrame(array[s, p], f"{label} slice {s} phase {p}") for p in range(array.shape[1])] for s in range(array.shape[0])]
