"""Study inputs of the CMR pipelines: a path, a `Study`, already processed frames, or a study that cannot be read.

The pipelines answer once per input, so a path holding several studies gets a `MultipleStudiesError` entry;
pass `read_study(path, study=...)` (or each of `read_studies(path)`) to answer for the studies in it.
"""

from __future__ import annotations

from pathlib import Path

import torch


def study_inputs(study, feature_extractor, task: str) -> dict:
    """`{"pixel_values_videos": (1, T, 3, H, W), "warnings": [[...]], "error": [None or "Type: why"]}` for a
    study path (folder or zip), a `Study` (from `read_study`), or a dict holding `pixel_values_videos`
    ((T, 3, H, W) or (1, T, 3, H, W)).

    A study that cannot be read gets zero frames, which only keep a batch's shapes aligned, and its error,
    so that the other studies of a call are answered as usual.
    """
    if isinstance(study, dict) and "pixel_values_videos" in study:
        pixels = torch.as_tensor(study["pixel_values_videos"])
        pixels = pixels if pixels.dim() == 5 else pixels.unsqueeze(0)
        return {"pixel_values_videos": pixels, "warnings": [[]], "error": [None]}
    if isinstance(study, (str, Path)) or is_read_study(study):
        try:
            batch = feature_extractor(str(study) if isinstance(study, Path) else study, return_tensors="pt")
        except Exception as error:
            if not is_study_error(error):
                raise
            size = feature_extractor.image_size
            pixels = torch.zeros(1, feature_extractor.num_frames, 3, size, size)
            return {"pixel_values_videos": pixels, "warnings": [[]], "error": [f"{type(error).__name__}: {error}"]}
        meta = batch["study_metadata"][0]
        warnings = list(meta.get("warnings", [])) + [f"missing view: {v}" for v in meta.get("missing_views", [])]
        return {"pixel_values_videos": batch["pixel_values_videos"], "warnings": [warnings], "error": [None]}
    raise TypeError(f"{task} takes a study path, a Study, a dict with 'pixel_values_videos', or a list of these; "
                    f"got {type(study).__name__}.")


def is_read_study(study) -> bool:
    """A `Study` from `read_study`, known by name for the same reason as in `is_study_error`."""
    return any(cls.__name__ == "Study" for cls in type(study).__mro__)


def is_study_error(error: Exception) -> bool:
    """A `CMRStudyError`, known by name: loaded as remote code, the processor and the pipeline each have their own
    copy of the errors module, so `isinstance` against the pipeline's copy would miss the processor's errors."""
    return any(cls.__name__ == "CMRStudyError" for cls in type(error).__mro__)
