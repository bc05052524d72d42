"""From frames to studies and series: split by StudyInstanceUID, group by SeriesInstanceUID, split mixed
series, order frames, merge per-slice series.

Frames are split into studies first, so that no series (and no video) ever mixes two studies.

A DICOM series is split where it mixes orientations (a 3-plane localizer), image types (magnitude and
phase) or series numbers (scanners that reuse a UID). Slices are ordered by position along the stack
normal signed base to apex, phases by trigger time (InstanceNumber is not time order on every scanner).
Single-slice series of one sequence whose planes are parallel are merged into one stack; where two of them
sit at the same position, the later acquisition wins and the earlier is kept aside as a repeat.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .geometry import are_parallel, base_to_apex, plane_normal
from .headers import Frame
from .study import Series

SAME_SLICE_MM = 0.5
# ImageType values (third onwards) of phase, real and phase-sensitive reconstructions across vendors.
PHASE_LIKE_FLAGS = {"P", "PHASE", "R", "REAL", "R_IR", "P_IR", "PSIR", "PHASE MAP"}
SAME_POSITION_MM = 2.0


def split_into_studies(frames: list[Frame]) -> list[tuple[str, list[Frame]]]:
    """(StudyInstanceUID, frames) per study, in the order the source lists them.

    Frames without a well-formed StudyInstanceUID (missing or damaged) join the study when there is only
    one; among several they form a group of their own (UID ""), since nothing says where they belong.
    """
    groups: dict[str, list[Frame]] = defaultdict(list)
    for frame in frames:
        groups[frame.study_instance_uid].append(frame)
    if "" in groups and len(groups) == 2:
        orphans = groups.pop("")
        next(iter(groups.values())).extend(orphans)
    return list(groups.items())


def split_into_series(frames: list[Frame]) -> list[Series]:
    """Group frames by (SeriesInstanceUID, SeriesNumber), then split by image flavour and orientation."""
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for frame in frames:
        groups[(frame.series_instance_uid, frame.series_number, image_flavour(frame))].append(frame)
    uid_parts = defaultdict(int)
    for uid, _, _ in groups:
        uid_parts[uid] += 1
    series = []
    for (uid, number, flavour), members in groups.items():
        clusters = _orientation_clusters(members)
        for cluster in clusters:
            item = series_from_frames(cluster)
            item.orientations_in_dicom_series = len(clusters)
            if item.normal is None and len(clusters) > 1:
                item.reasons.append("split: frames without position or orientation, set apart from their stack")
            elif uid_parts[uid] > 1 or len(clusters) > 1:
                item.reasons.append(_split_reason(uid_parts[uid], len(clusters), flavour))
            if not uid:
                item.reasons.append("no SeriesInstanceUID: grouped by series number")
            series.append(item)
    series.sort(key=lambda s: (s.acquisition_order, s.slice_positions[:1]))
    return series


def image_flavour(frame: Frame) -> str:
    """'phase' for phase, real and phase-sensitive (PSIR) reconstructions, 'magnitude' otherwise."""
    flags = set(frame.image_type[2:])
    if frame.complex_component in ("PHASE", "REAL") or flags & PHASE_LIKE_FLAGS:
        return "phase"
    return "magnitude"


def _split_reason(n_parts: int, n_orientations: int, flavour: str) -> str:
    parts = []
    if n_parts > 1:
        parts.append(f"its DICOM series also holds other images (series numbers or image types differ; this part: {flavour})")
    if n_orientations > 1:
        parts.append(f"its DICOM series mixes {n_orientations} orientations")
    return "split: " + "; ".join(parts)


def _orientation_clusters(frames: list[Frame]) -> list[list[Frame]]:
    """Frames grouped by plane orientation; frames lacking position or orientation form a group of their own."""
    clusters: list[tuple[np.ndarray | None, list[Frame]]] = []
    for frame in frames:
        has_geometry = frame.orientation is not None and frame.position is not None
        normal = plane_normal(frame.orientation) if has_geometry else None
        for reference, members in clusters:
            if (normal is None and reference is None) or (
                normal is not None and reference is not None and are_parallel(normal, reference, 5.0)
            ):
                members.append(frame)
                break
        else:
            clusters.append((normal, [frame]))
    return [members for _, members in clusters]


def series_from_frames(frames: list[Frame], merged_from: list[Series] | None = None) -> Series:
    """A `Series` with its frames on the [slice][phase] grid."""
    grid, normal, positions = order_frames(frames)
    first = frames[0]
    parts = merged_from or []
    counts = [len(slice_frames) for slice_frames in grid]
    reasons = [f"uneven phases per slice: {counts}"] if len(set(counts)) > 1 else []
    return Series(
        series_instance_uid=parts[0].series_instance_uid if parts else first.series_instance_uid,
        series_number=parts[-1].series_number if parts else first.series_number,
        description=parts[-1].description if parts else first.description,
        grid=grid,
        normal=normal,
        slice_positions=positions,
        series_instance_uids=_unique([uid for p in parts for uid in p.series_instance_uids] or [first.series_instance_uid]),
        merged_series_numbers=[p.series_number for p in parts] or [first.series_number],
        reasons=reasons,
    )


def order_frames(frames: list[Frame]) -> tuple[list[list[Frame]], np.ndarray | None, list[float]]:
    """Slices base to apex along the stack normal, phases by trigger time within each slice."""
    normal = _stack_normal(frames)
    if normal is None:
        keyed = [(_fallback_location(frame), frame) for frame in frames]
    else:
        keyed = [(float(np.dot(frame.position, normal)), frame) for frame in frames]
    keyed.sort(key=lambda item: item[0])
    slices: list[list[Frame]] = []
    positions: list[float] = []
    for location, frame in keyed:
        if positions and abs(location - positions[-1]) <= SAME_SLICE_MM:
            slices[-1].append(frame)
        else:
            slices.append([frame])
            positions.append(location)
    return [sorted(s, key=_phase_key) for s in slices], normal, positions


def _stack_normal(frames: list[Frame]) -> np.ndarray | None:
    """Mean plane normal signed base to apex; None when any frame lacks position or orientation."""
    if any(frame.orientation is None or frame.position is None for frame in frames):
        return None
    normals = np.array([plane_normal(frame.orientation) for frame in frames])
    normals *= np.sign(normals @ normals[0])[:, None]
    mean = normals.mean(axis=0)
    return base_to_apex(mean / np.linalg.norm(mean))


def _fallback_location(frame: Frame) -> float:
    return frame.slice_location if frame.slice_location is not None else 0.0


def _phase_key(frame: Frame) -> tuple:
    trigger = frame.trigger_time if frame.trigger_time is not None else float("inf")
    temporal = frame.temporal_index if frame.temporal_index is not None else 0
    instance = frame.instance_number if frame.instance_number is not None else 0
    return (trigger, temporal, instance, frame.frame_index or 0, frame.file.name)


def merge_parallel_slices(series: list[Series], sequence: str) -> list[Series]:
    """Merge series of `sequence` lying in parallel planes (one series per slice or per part of a stack).

    Series of one role and phase count whose planes are parallel form a group. Within it, a series whose
    every slice lies where a later series has one is a repeat (the later acquisition is used); series that
    add new positions are merged into one stack. A series overlapping the others only in part is left as it
    is. Series parallel to no other (long-axis views) stay as they are.
    """
    candidates = [s for s in series if s.sequence == sequence and s.used and s.normal is not None]
    result = [s for s in series if s not in candidates]
    for group in _parallel_groups(candidates):
        parts, partial = _drop_repeated_positions(group)
        result.extend(partial)
        result.extend(s for s in group if not s.used)
        if len(parts) == 1:
            result.extend(parts)
            continue
        merged = series_from_frames([f for s in parts for f in s.frames], merged_from=parts)
        merged.sequence, merged.role = sequence, parts[-1].role
        merged.confidence = min(s.confidence for s in parts)
        merged.reasons = merged.reasons + _unique([r for s in parts for r in s.reasons]) + [
            f"merged {len(parts)} parallel series into one stack of {merged.n_slices} slices"
        ]
        result.append(merged)
    result.sort(key=lambda s: s.acquisition_order)
    return result


def _parallel_groups(candidates: list[Series]) -> list[list[Series]]:
    groups: list[list[Series]] = []
    for item in sorted(candidates, key=lambda s: s.acquisition_order):
        for group in groups:
            same_kind = item.role == group[0].role and item.n_phases == group[0].n_phases
            if same_kind and are_parallel(item.normal, group[0].normal):
                group.append(item)
                break
        else:
            groups.append([item])
    return groups


def _drop_repeated_positions(group: list[Series]) -> tuple[list[Series], list[Series]]:
    """(series to merge, series overlapping only in part); fully covered earlier series are marked repeats."""
    kept: list[Series] = []
    partial: list[Series] = []
    for item in reversed(group):  # latest first: the last acquisition of a position wins
        twins = [_twin(centre, kept) for centre in _slice_centres(item)]
        if all(twin is not None for twin in twins):
            mark_repeat(item, twins[0])
        elif any(twin is not None for twin in twins):
            partial.append(item)
        else:
            kept.append(item)
    return list(reversed(kept)), partial


def _twin(centre: np.ndarray, kept: list[Series]) -> Series | None:
    for other in kept:
        if any(np.linalg.norm(c - centre) <= SAME_POSITION_MM for c in _slice_centres(other)):
            return other
    return None


def _slice_centres(series: Series) -> list[np.ndarray]:
    return [np.asarray(frames[0].position, float) for frames in series.grid]


def mark_repeat(item: Series, winner: Series) -> None:
    item.used = False
    item.role = "repeat_discarded"
    item.reasons.append(f"repeated acquisition: series {winner.series_number} covers the same plane later and is used")


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))
