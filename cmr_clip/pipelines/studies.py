"""Study inputs of the CMR pipelines: a path, a `Study`, already processed frames, or a study that cannot be read.

The pipelines answer once per input, so a path holding several studies gets a `MultipleStudiesError` entry;
pass `read_study(path, study=...)` (or each of `read_studies(path)`) to answer for the studies in it.

Each input also carries its view coverage (`coverage`): the "sequence/view" pairs the processor found, the
views of the model's layout it did not find, the share of the layout's views found and whether that share
is low (under `LOW_COVERAGE`, then also a warning). Processed frames or cached embeddings carry it when the
processor's `study_metadata` comes with them; without it the views are unknown (`coverage` None).
"""

from __future__ import annotations

from pathlib import Path

import torch

LOW_COVERAGE = 0.5  # below this share of the layout's views found, answers rest on a small part of the study


def study_inputs(study, feature_extractor, task: str) -> dict:
    """`{"pixel_values_videos": (1, T, 3, H, W), "warnings": [[...]], "coverage": [dict or None], "error": [None or
    "Type: why"]}` for a study path (folder or zip), a `Study` (from `read_study`), or a dict holding
    `pixel_values_videos` ((T, 3, H, W) or (1, T, 3, H, W)) and optionally the processor's `study_metadata`.

    A study that cannot be read gets zero frames, which only keep a batch's shapes aligned, and its error,
    so that the other studies of a call are answered as usual.
    """
    if isinstance(study, dict) and "pixel_values_videos" in study:
        pixels = torch.as_tensor(study["pixel_values_videos"])
        pixels = pixels if pixels.dim() == 5 else pixels.unsqueeze(0)
        return {"pixel_values_videos": pixels, **study_context(study.get("study_metadata"), feature_extractor)}
    if isinstance(study, (str, Path)) or is_read_study(study):
        try:
            batch = feature_extractor(str(study) if isinstance(study, Path) else study, return_tensors="pt")
        except Exception as error:
            if not is_study_error(error):
                raise
            size = feature_extractor.image_size
            pixels = torch.zeros(1, feature_extractor.num_frames, 3, size, size)
            return {"pixel_values_videos": pixels, "warnings": [[]], "coverage": [None],
                    "error": [f"{type(error).__name__}: {error}"]}
        return {"pixel_values_videos": batch["pixel_values_videos"],
                **study_context(batch["study_metadata"][0], feature_extractor)}
    raise TypeError(f"{task} takes a study path, a Study, a dict with 'pixel_values_videos', or a list of these; "
                    f"got {type(study).__name__}.")


def study_context(meta: dict | None, feature_extractor) -> dict:
    """`warnings` (the processor's, each missing view, low coverage), `coverage` (see the module doc) and `error`
    (None) of a study from its `study_metadata`, each as a one-element list (the pipelines' batch convention)."""
    if not meta or "views_found" not in meta:  # no processor metadata: the views are not known
        return {"warnings": [[]], "coverage": [None], "error": [None]}
    coverage = view_coverage(meta, [entry.key for entry in feature_extractor.study_layout.entries])
    warnings = list(meta.get("warnings", [])) + [f"missing view: {v}" for v in meta.get("missing_views", [])]
    if coverage["low"]:
        warnings.append(f"low view coverage: {coverage['layout_views_found']} of {coverage['layout_views']} views of "
                        f"the model's layout found ({', '.join(coverage['views_found']) or 'none'}); answers rest on "
                        "part of the study")
    return {"warnings": [warnings], "coverage": [coverage], "error": [None]}


def view_coverage(meta: dict, layout_views: list[str]) -> dict:
    """What of the model's layout a study covers, from the processor's `study_metadata`."""
    found = sorted(f"{sequence}/{view}" for sequence, views in meta.get("views_found", {}).items() for view in views)
    missing = list(meta.get("missing_views", []))
    present = len([key for key in dict.fromkeys(layout_views) if key not in missing])
    total = len(dict.fromkeys(layout_views))
    return {"views_found": found, "missing_views": missing, "layout_views": total, "layout_views_found": present,
            "fraction": present / total if total else 1.0, "low": bool(total) and present / total < LOW_COVERAGE}


def is_read_study(study) -> bool:
    """A `Study` from `read_study`, known by name for the same reason as in `is_study_error`."""
    return any(cls.__name__ == "Study" for cls in type(study).__mro__)


def is_study_error(error: Exception) -> bool:
    """A `CMRStudyError`, known by name: loaded as remote code, the processor and the pipeline each have their own
    copy of the errors module, so `isinstance` against the pipeline's copy would miss the processor's errors."""
    return any(cls.__name__ == "CMRStudyError" for cls in type(error).__mro__)
