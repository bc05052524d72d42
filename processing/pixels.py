"""The pixel pipeline: decode only the selected frames, then rescale, window to 8 bit, resize, crop, normalise.

Decoding goes through pydicom; compressed transfer syntaxes need its decoder plugins (the
`cmr-clip[dicom-codecs]` extra installs pylibjpeg and its codecs). Resizing uses
`torch.nn.functional.interpolate` (antialiased when shrinking), so no torchvision or Pillow is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.uid import UID

from ..privacy import without_path
from .errors import CODECS_EXTRA, CorruptPixelDataError, DICOMwebError, InconsistentGeometryError, UnsupportedCompressionError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WINDOW_PERCENTILES = (0.5, 99.5)


@dataclass
class ArrayFrame:
    """A frame given as an array by the user (preprocessed data), standing in for a DICOM `Frame`."""

    pixels: np.ndarray
    label: str


def decode_frame(frame) -> np.ndarray:
    """The frame's values as float32 (rows, columns) after rescale slope/intercept and MONOCHROME1 inversion.

    8-bit grey arrays given by the user come back unchanged (uint8) and are not windowed again.
    """
    if isinstance(frame, ArrayFrame):
        if frame.pixels.dtype == np.uint8 and frame.pixels.ndim == 2:
            return frame.pixels  # already 8-bit: used as given, no windowing
        return _to_grey(np.asarray(frame.pixels, dtype=np.float32), frame.label)
    _check_decoder(frame)
    try:
        array = _stored_values(frame)
    except (UnsupportedCompressionError, DICOMwebError):  # a server's failure is no damaged file
        raise
    except Exception as error:
        array = _decode_without_meta(frame, error)
    image = _to_grey(array.astype(np.float32), frame.label)
    if image.shape != (frame.rows, frame.columns):
        raise InconsistentGeometryError(f"{frame.label}: pixel data is {image.shape}, header says {frame.rows}x{frame.columns}; the file is damaged, re-export it")
    image = image * np.float32(frame.rescale_slope) + np.float32(frame.rescale_intercept)
    if frame.photometric == "MONOCHROME1":
        image = image.max() + image.min() - image
    return image


def _stored_values(frame) -> np.ndarray:
    """The frame's stored values: from its file, or from its source where it can fetch one frame (DICOMweb)."""
    read_frame = getattr(frame.file, "read_frame", None)
    if read_frame is not None:
        return read_frame(frame.frame_index)
    with frame.file.open() as handle:
        return pydicom.pixels.pixel_array(handle, index=frame.frame_index)


def _check_decoder(frame) -> None:
    syntax = UID(frame.transfer_syntax) if frame.transfer_syntax else None
    if syntax is None or not syntax.is_transfer_syntax or not syntax.is_compressed:
        return
    try:
        decoder = pydicom.pixels.get_decoder(syntax)
    except NotImplementedError:
        raise UnsupportedCompressionError(f"{frame.label}: no decoder exists for transfer syntax {syntax.name}; convert the study to an uncompressed syntax") from None
    if not decoder.is_available:
        raise UnsupportedCompressionError(
            f"{frame.label}: pixel data is compressed as {syntax.name} and no installed decoder handles it; "
            f"install the decoders with `pip install {CODECS_EXTRA}`"
        )


def _decode_without_meta(frame, first_error: Exception) -> np.ndarray:
    """Files without a file meta header (accepted by the header pass) need a forced full read."""
    try:
        with frame.file.open() as handle:
            ds = pydicom.dcmread(handle, force=True)
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian if ds.is_implicit_VR else pydicom.uid.ExplicitVRLittleEndian
        array = ds.pixel_array
        return array[frame.frame_index] if frame.frame_index is not None and array.ndim >= 3 else array
    except Exception:
        raise CorruptPixelDataError(
            f"{frame.label}: pixel data cannot be decoded ({type(first_error).__name__}: "
            f"{without_path(str(first_error), frame.file.path, frame.file.name, frame.file.member)}); the file is damaged or truncated, re-export it"
        ) from first_error


def _to_grey(array: np.ndarray, label: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., :3] @ np.asarray([0.299, 0.587, 0.114], np.float32)
    if array.ndim != 2:
        raise InconsistentGeometryError(f"{label}: expected one 2D image, got pixel data of shape {array.shape}")
    return array


def window_to_uint8(images: list[np.ndarray]) -> list[np.ndarray]:
    """Map one series' images to 8 bit with a shared robust window (percentiles over all of them)."""
    if all(image.dtype == np.uint8 for image in images):
        return images
    sample = np.concatenate([image.ravel()[::7] for image in images])
    low, high = np.percentile(sample, WINDOW_PERCENTILES)
    scale = 255.0 / max(float(high - low), 1e-6)
    return [np.clip(np.round((image - low) * scale), 0, 255).astype(np.uint8) for image in images]


@dataclass
class FrameTransform:
    """Resize the short side, centre-crop a square, resize to the output size, 3 channels, normalise.

    With `field_of_view_mm`, an image whose pixel spacing is known is cropped by size in millimetres instead:
    the centred `field_of_view_mm` square (zero beyond the image's edges) is resized to `image_size`, so every
    output pixel covers field_of_view_mm / image_size mm whatever the scanner's field of view and matrix. An
    image without a spacing (arrays given by the user) falls back to `resize_shortest_edge` and `crop_size`.
    """

    image_size: int = 224
    resize_shortest_edge: int | None = None
    crop_size: int | None = None
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    field_of_view_mm: float | None = None

    def __post_init__(self):
        if self.field_of_view_mm is not None and not self.field_of_view_mm > 0:
            raise ValueError(f"field_of_view_mm must be positive (or None), got {self.field_of_view_mm}")

    def __call__(self, image: np.ndarray, spacing: tuple[float, float] | None = None) -> torch.Tensor:
        """uint8 (H, W) -> float32 (3, image_size, image_size)."""
        return self.normalise(self.geometry(image, spacing))

    def geometry(self, image: np.ndarray, spacing: tuple[float, float] | None = None) -> torch.Tensor:
        """uint8 (H, W) -> float32 (image_size, image_size) in [0, 1]: resize, crop, resize."""
        return self.geometry_batch(image[None], spacing)[0]

    def geometry_batch(self, images: np.ndarray, spacing: tuple[float, float] | None = None,
                       field_of_view_mm: float | None = None) -> torch.Tensor:
        """uint8 (N, H, W) of one shape and `spacing` (mm, row and column; None: unknown) -> float32
        (N, image_size, image_size): one interpolation call for the whole stack. `field_of_view_mm` overrides
        the transform's own for these images."""
        x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
        field = field_of_view_mm or self.field_of_view_mm
        if field is not None and spacing is not None:
            x = _centre_window(x, *(field / float(mm) for mm in spacing))
        else:
            x = _resize_short_side(x, self.short_side)
            x = _centre_crop(x, self.crop)
        return _resize(x, (self.image_size, self.image_size))[:, 0]

    @property
    def short_side(self) -> int:
        return self.resize_shortest_edge or self.image_size

    @property
    def crop(self) -> int:
        return self.crop_size or self.resize_shortest_edge or self.image_size

    def output_spacing(self, shape: tuple[int, int], spacing: tuple[float, float] | None,
                       field_of_view_mm: float | None = None) -> tuple[float, float] | None:
        """mm per output pixel (row, column) for an image of `shape` read with `spacing` (mm, row and column;
        None: unknown). Each resize scales a pixel by input size / output size, the crop keeps it."""
        if spacing is None:
            return None
        field = field_of_view_mm or self.field_of_view_mm
        if field is not None:
            return (field / self.image_size,) * 2
        height, width = shape
        resized = _short_side_size(height, width, self.short_side)
        if min(resized) < self.crop:  # `_centre_crop` resizes again before cutting
            resized = _short_side_size(*resized, self.crop)
        zoom = self.crop / self.image_size
        return (float(spacing[0]) * height / resized[0] * zoom, float(spacing[1]) * width / resized[1] * zoom)

    def geometry_all(self, images: dict, spacings: dict | None = None, fields: dict | None = None) -> dict:
        """{key: uint8 (H, W)} -> {key: uint8 (image_size, image_size)}: `geometry` rounded back to 8 bit. Images
        of one shape, spacing (`spacings`: {key: (row, column) mm or None}) and field of view (`fields`: {key:
        mm or None}, overriding `field_of_view_mm`) are resized together."""
        out = {}
        for keys, stack, spacing, field in _stacks_by_geometry(images, spacings, fields):
            out.update(zip(keys, (self.geometry_batch(stack, spacing, field) * 255).round().to(torch.uint8)))
        return out

    def transform_all(self, images: dict, spacings: dict | None = None, fields: dict | None = None) -> dict:
        """{key: uint8 (H, W)} -> {key: (3, image_size, image_size)}, grouped as in `geometry_all`."""
        out = {}
        for keys, stack, spacing, field in _stacks_by_geometry(images, spacings, fields):
            out.update(zip(keys, self.normalise(self.geometry_batch(stack, spacing, field))))
        return out

    def normalise(self, grey: torch.Tensor) -> torch.Tensor:
        """float (..., H, W) in [0, 1] -> (..., 3, H, W) normalised with the configured mean and std."""
        mean = torch.tensor(self.image_mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.image_std, dtype=torch.float32)[:, None, None]
        return (grey.unsqueeze(-3).expand(*grey.shape[:-2], 3, *grey.shape[-2:]) - mean) / std

    def zeros(self) -> torch.Tensor:
        return torch.zeros(3, self.image_size, self.image_size)


def zoom_sizes(image_size: int, zoom: float) -> dict:
    """`CMRStudyProcessor` arguments that keep the middle 1/`zoom` of each image's short side at `image_size` px:
    `resize_shortest_edge` = zoom x image_size, then a centre crop of `image_size` (nothing at zoom 1)."""
    if not zoom >= 1:
        raise ValueError(f"zoom must be at least 1 (1 keeps the whole field of view), got {zoom}")
    if zoom == 1:
        return {}
    return {"resize_shortest_edge": round(image_size * zoom), "crop_size": image_size}


def _stacks_by_geometry(images: dict, spacings: dict | None = None, fields: dict | None = None):
    """(keys, stacked images, spacing, field of view) for each image shape, pixel spacing and field of view
    among `images` ({key: (H, W)})."""
    spacings, fields = spacings or {}, fields or {}
    groups: dict[tuple, list] = {}
    for key, image in images.items():
        spacing = spacings.get(key)
        spacing = None if spacing is None else tuple(float(v) for v in spacing)
        groups.setdefault((image.shape, spacing, fields.get(key)), []).append(key)
    for (_, spacing, field), keys in groups.items():
        yield keys, np.stack([images[key] for key in keys]), spacing, field


def _short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to `size`, the long side in proportion."""
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def _resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    return _resize(x, _short_side_size(*x.shape[-2:], size))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def _centre_window(x: torch.Tensor, rows: float, cols: float) -> torch.Tensor:
    """The window of about `rows` x `cols` pixels centred on the image, zero-padded where it reaches past the
    image. Each side is rounded to the whole number nearest to it whose difference to the image's side is even,
    so that the window's centre is exactly the image's (a window a pixel off centre would shift the heart
    by a pixel); the window's size is then within one source pixel of the asked one."""
    height, width = x.shape[-2:]
    rows, cols = _same_parity(rows, height), _same_parity(cols, width)
    top, left = (height - rows) // 2, (width - cols) // 2
    pad = [max(0, -left), max(0, left + cols - width), max(0, -top), max(0, top + rows - height)]
    if any(pad):
        x = F.pad(x, pad)
        top, left = top + pad[2], left + pad[0]
    return x[..., top : top + rows, left : left + cols]


def _same_parity(size: float, reference: int) -> int:
    """The positive whole number nearest to `size` that differs from `reference` by an even number."""
    low = int(np.floor(size))
    low -= (reference - low) % 2
    best = low if size - low <= low + 2 - size else low + 2
    return max(best, 2 - reference % 2)


def _centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    if height < size or width < size:
        x = _resize_short_side(x, size)
        height, width = x.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top : top + size, left : left + size]
