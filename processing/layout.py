"""`StudyLayout`: which frames of a study make the model's input video, and in what order.

A layout is an ordered list of entries, each a (sequence, view) pairing with a slice policy, a phase policy
and a frame count. Two samplings exist:

- `fixed`: every entry has a frame count and the counts add up to `num_frames`; an entry's frames are spread
  evenly over its slices and phases (the trained demo's default layout).
- `segments`: the release's scheme. Entries contribute their natural frames (all phases of a slice, all
  slices, or a single image repeated as often as another entry has slices), the contributions are
  concatenated, and `num_frames` frames are taken, one per equal segment of the timeline (the middle frame
  at test time, a random one in training). A shorter timeline gives all its frames followed by zero frames.

Views a study lacks follow `missing`: `zeros` (their frames are zero, as the release did) or `fill` (their
budget goes to the views that are present). Either way the selection reports them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..vocabulary import CARDIAC_VIEWS, MODEL_SEQUENCES
from .errors import LayoutError

if TYPE_CHECKING:  # a layout reads a study; the study's display imports the layout
    from .study import Series, Study

SLICE_POLICIES = ("middle", "all")
PHASE_POLICIES = ("all", "first", "cycle")
CINE_PHASES = ("all", "cycle")  # the default layout's choices for its cine entries
SAMPLINGS = ("fixed", "segments")
MISSING_POLICIES = ("zeros", "fill")


@dataclass
class LayoutEntry:
    """One (sequence, view) pairing: which slices and phases, and how many frames (None: the natural count).

    `repeat_as_slices_of` ("lge/sax") repeats the entry's single image as many times as that other entry's
    series has slices, as the release did for its LGE long-axis images.

    Phases: `all` splits the slice's phases into equal segments, one frame from the middle of each; `first`
    takes the first phase; `cycle` takes every phase too, but centres the segments on end-diastole and on
    equal fractions of the cycle after it. A cine's first phase is end-diastole (it is triggered on the ECG's
    R wave, DICOM TriggerTime 0), so with 3 frames `cycle` shows the heart at end-diastole, a third of the
    cycle later (about end-systole) and two thirds later (diastole), where `all` shows 1/6, 1/2 and 5/6 of the
    cycle, none of them the largest or the smallest ventricle that an ejection fraction compares.
    """

    sequence: str
    view: str
    frames: int | None = None
    slices: str = "middle"
    phases: str = "all"
    repeat_as_slices_of: str | None = None

    @property
    def key(self) -> str:
        return f"{self.sequence}/{self.view}"


@dataclass
class StudyLayout:
    name: str
    entries: list[LayoutEntry]
    num_frames: int
    sampling: str = "fixed"
    missing: str = "fill"

    def __post_init__(self) -> None:
        self.entries = [e if isinstance(e, LayoutEntry) else LayoutEntry(**e) for e in self.entries]
        self.validate()

    def validate(self) -> None:
        if self.sampling not in SAMPLINGS or self.missing not in MISSING_POLICIES or self.num_frames < 1:
            raise LayoutError(f"layout {self.name!r}: sampling must be one of {SAMPLINGS}, missing one of {MISSING_POLICIES}, num_frames >= 1")
        for entry in self.entries:
            if entry.sequence not in MODEL_SEQUENCES or entry.view not in CARDIAC_VIEWS:
                raise LayoutError(f"layout {self.name!r}: unknown pairing {entry.key}; sequences {MODEL_SEQUENCES}, views {CARDIAC_VIEWS}")
            if entry.slices not in SLICE_POLICIES or entry.phases not in PHASE_POLICIES:
                raise LayoutError(f"layout {self.name!r}, {entry.key}: slices must be one of {SLICE_POLICIES}, phases one of {PHASE_POLICIES}")
            if entry.phases == "cycle" and (entry.slices != "middle" or self.sampling != "fixed"):
                raise LayoutError(f"layout {self.name!r}, {entry.key}: phases 'cycle' places one slice's frames on its "
                                  "cardiac cycle; it needs slices 'middle' and fixed sampling")
        if self.sampling == "fixed":
            counts = [e.frames for e in self.entries]
            if any(c is None or c < 1 for c in counts) or sum(counts) != self.num_frames:
                raise LayoutError(f"layout {self.name!r}: with fixed sampling every entry needs frames >= 1 adding up to {self.num_frames}, got {counts}")

    @classmethod
    def reference(cls) -> "StudyLayout":
        """The released model's composition and 64-frame segment sampling (see docs/reference-model.md).

        The release names "the cine long-axis view" and "the LGE long-axis" image beside its 2-chamber and
        3-chamber images; both are read as the 4-chamber (horizontal long-axis) view.
        """
        lax_lge = dict(frames=None, slices="middle", phases="first", repeat_as_slices_of="lge/sax")
        return cls(
            name="reference",
            num_frames=64,
            sampling="segments",
            missing="zeros",
            entries=[
                LayoutEntry("cine", "4ch", slices="middle", phases="all"),
                LayoutEntry("cine", "sax", slices="middle", phases="all"),
                LayoutEntry("lge", "sax", slices="all", phases="first"),
                LayoutEntry("lge", "4ch", **lax_lge),
                LayoutEntry("lge", "2ch", **lax_lge),
                LayoutEntry("lge", "3ch", **lax_lge),
            ],
        )

    @classmethod
    def default(cls, num_frames: int = 16, cine_phases: str = "all") -> "StudyLayout":
        """Cine long-axis and short-axis motion plus LGE, in fixed proportions of `num_frames` (at least 7);
        `cine_phases` ("all" or "cycle") places the cine frames on the cardiac cycle (see `LayoutEntry`)."""
        if cine_phases not in CINE_PHASES:
            raise LayoutError(f"cine_phases must be one of {CINE_PHASES}, got {cine_phases!r}")
        plan = [
            (LayoutEntry("cine", "4ch", slices="middle", phases=cine_phases), 4),
            (LayoutEntry("cine", "sax", slices="middle", phases=cine_phases), 4),
            (LayoutEntry("cine", "2ch", slices="middle", phases=cine_phases), 2),
            (LayoutEntry("cine", "3ch", slices="middle", phases=cine_phases), 2),
            (LayoutEntry("lge", "sax", slices="all", phases="first"), 5),
            # One image each: a second frame would repeat it, so the share goes to the LGE short-axis stack,
            # whose slices are where a scar is found or missed.
            (LayoutEntry("lge", "4ch", slices="middle", phases="first"), 0),
            (LayoutEntry("lge", "2ch", slices="middle", phases="first"), 0),
        ]
        if num_frames < len(plan):
            raise LayoutError(f"the default layout needs at least {len(plan)} frames, got {num_frames}")
        counts = [1 + share for share in _apportion([weight for _, weight in plan], num_frames - len(plan))]
        entries = [LayoutEntry(**{**asdict(entry), "frames": count}) for (entry, _), count in zip(plan, counts)]
        return cls(name="default", entries=entries, num_frames=num_frames, sampling="fixed", missing="fill")

    @classmethod
    def named(cls, name: str, num_frames: int | None = None) -> "StudyLayout":
        if name == "reference":
            return cls.reference()
        if name == "default":
            return cls.default(num_frames or 16)
        raise LayoutError(f"unknown layout {name!r}: built-in layouts are 'reference' and 'default'; or pass a StudyLayout")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StudyLayout":
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass
class SelectedFrame:
    series: Series
    slice_index: int
    phase_index: int
    entry: str

    @property
    def frame(self):
        return self.series.frame_at(self.slice_index, self.phase_index)


@dataclass
class Selection:
    """The frames a layout selected (None: a zero frame), with what was missing and any warnings."""

    layout: str
    frames: list[SelectedFrame | None]
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """One line per run of consecutive frames from the same entry, without identifiers."""
        lines, start = [], 0
        for i in range(1, len(self.frames) + 1):
            if i == len(self.frames) or _run_key(self.frames[i]) != _run_key(self.frames[start]):
                item = self.frames[start]
                what = "zero frames" if item is None else f"{item.entry} from series {item.series.series_number}"
                lines.append(f"frames {start}-{i - 1}: {what}")
                start = i
        return lines

    def as_metadata(self) -> list[dict]:
        return [
            {"entry": "zeros"}
            if item is None
            else {"entry": item.entry, "series_number": item.series.series_number, "slice": item.slice_index, "phase": item.phase_index}
            for item in self.frames
        ]


def _run_key(item: SelectedFrame | None):
    return None if item is None else (item.entry, id(item.series))


@dataclass
class FramePlan:
    """Everything a layout can draw from a study: the `timeline` of candidate frames (the entries' natural
    frames, concatenated in layout order) and, for each of the model's frames, the `slots` range `[a, b)`
    of the timeline it is drawn from (`a == b`: a zero frame). The middle of each range is the test-time
    choice, a random member the training-time choice (the release's random frame per segment)."""

    layout: str
    timeline: list[SelectedFrame]
    slots: list[tuple[int, int]]
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def select(self, rng: np.random.Generator | None = None) -> Selection:
        """One frame per slot by the slot rule (`pick_slots`), None for zero frames."""
        frames = [None if i is None else self.timeline[i] for i in pick_slots(self.slots, rng)]
        return Selection(layout=self.layout, frames=frames, missing=list(self.missing), warnings=list(self.warnings))


def pick_slots(slots, rng: np.random.Generator | None = None) -> list[int | None]:
    """The slot rule, the one frame sampler of the processor and the training data: for each slot's range
    `[a, b)` of the timeline, the middle `(a + b - 1) // 2` (test time) or, given `rng`, a random member
    (training, the release's random frame per segment); an empty range (`b <= a`) gives None, a zero frame.
    `slots` is any sequence of (a, b) pairs, e.g. `FramePlan.slots` or a prepared study's (T, 2) array."""
    picks: list[int | None] = []
    for a, b in slots:
        a, b = int(a), int(b)
        if b <= a:
            picks.append(None)
        elif rng is None:
            picks.append((a + b - 1) // 2)
        else:
            picks.append(int(rng.integers(a, b)))
    return picks


def select_frames(study: Study, layout: StudyLayout, rng: np.random.Generator | None = None) -> Selection:
    """The frames `layout` takes from `study`; `rng` picks a random frame per segment (training) instead of the middle."""
    return plan_frames(study, layout).select(rng)


def plan_frames(study: Study, layout: StudyLayout) -> FramePlan:
    """The candidate frames of `study` under `layout` and the range each model frame is drawn from."""
    series_for = {entry.key: _series_for(study, entry) for entry in layout.entries}
    missing = [key for key, series in series_for.items() if series is None]
    warnings = [f"{key} not found in the study" for key in missing]
    warnings += [f"series {s.series_number}: {s.view_warning}" for s in study.series if s.used and s.view_warning]
    if layout.sampling == "segments":
        timeline, slots = _segment_plan(layout, series_for, warnings)
    else:
        timeline, slots = _fixed_plan(layout, series_for, warnings)
    return FramePlan(layout=layout.name, timeline=timeline, slots=slots, missing=missing, warnings=warnings)


def segment_slots(length: int, count: int, offset: int = 0) -> list[tuple[int, int]]:
    """`count` ranges splitting `range(length)` into equal segments (bounds `int(linspace(0, length,
    count + 1))`, the release's rule); with fewer frames than slots, single frames spread evenly (repeats)."""
    if count <= length:
        bounds = np.linspace(0, length, count + 1).astype(int)
        return [(offset + int(a), offset + int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    return [(offset + i, offset + i + 1) for i in spread_indices(length, count)]


def _series_for(study: Study, entry: LayoutEntry) -> Series | None:
    return study.find(entry.sequence, entry.view, role=entry.sequence) or study.find(entry.sequence, entry.view)


def natural_frames(entry: LayoutEntry, series: Series, series_for: dict) -> list[SelectedFrame]:
    """The entry's frames before any resampling: chosen slices (base to apex) x chosen phases."""
    slice_indices = [series.n_slices // 2] if entry.slices == "middle" else list(range(series.n_slices))
    frames = []
    for s in slice_indices:
        phases = range(len(series.grid[s])) if entry.phases in ("all", "cycle") else [0]
        frames.extend(SelectedFrame(series, s, p, entry.key) for p in phases)
    if entry.repeat_as_slices_of is not None:
        other = series_for.get(entry.repeat_as_slices_of)
        frames = frames[:1] * (other.n_slices if other is not None else 1)
    return frames


def _segment_plan(layout, series_for, warnings) -> tuple[list[SelectedFrame], list[tuple[int, int]]]:
    timeline = []
    for entry in layout.entries:
        if series_for[entry.key] is not None:
            timeline.extend(natural_frames(entry, series_for[entry.key], series_for))
    n = layout.num_frames
    if len(timeline) >= n:
        return timeline, segment_slots(len(timeline), n)
    if layout.missing == "fill" and timeline:
        warnings.append(f"only {len(timeline)} frames available for {n}: frames repeated")
        return timeline, segment_slots(len(timeline), n)
    warnings.append(f"only {len(timeline)} frames available for {n}: {n - len(timeline)} zero frames appended")
    return timeline, [(i, i + 1) for i in range(len(timeline))] + [(len(timeline), len(timeline))] * (n - len(timeline))


def _fixed_plan(layout, series_for, warnings) -> tuple[list[SelectedFrame], list[tuple[int, int]]]:
    present = [e for e in layout.entries if series_for[e.key] is not None]
    budgets = {e.key: e.frames for e in layout.entries}
    if layout.missing == "fill" and present and len(present) < len(layout.entries):
        spare = sum(e.frames for e in layout.entries if series_for[e.key] is None)
        extra = _apportion([e.frames for e in present], spare)
        for entry, more in zip(present, extra):
            budgets[entry.key] += more
        warnings.append(f"{spare} frames of missing views filled from {', '.join(e.key for e in present)}")
    timeline: list[SelectedFrame] = []
    slots: list[tuple[int, int]] = []
    for entry in layout.entries:
        series = series_for[entry.key]
        if series is None:
            if layout.missing == "zeros":
                slots.extend([(len(timeline), len(timeline))] * budgets[entry.key])
            continue
        natural = natural_frames(entry, series, series_for)
        if entry.phases == "cycle":
            natural = _centre_on_first(natural, budgets[entry.key])
        slots.extend(segment_slots(len(natural), budgets[entry.key], offset=len(timeline)))
        timeline.extend(natural)
    slots.extend([(len(timeline), len(timeline))] * (layout.num_frames - len(slots)))
    return timeline, slots


def _centre_on_first(phases: list, count: int) -> list:
    """One slice's phases in cycle order, turned so that the first of `count` equal segments has the first
    phase at its middle (the slot rule's test-time pick): the last phases of the cycle, late diastole, come
    first. Each later segment's middle then lies the same share of the cycle further on."""
    if count > len(phases):
        return phases
    first_segment = segment_slots(len(phases), count)[0]
    turn = (first_segment[0] + first_segment[1] - 1) // 2
    return phases[len(phases) - turn:] + phases[: len(phases) - turn]


def spread_indices(length: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(length), each the middle of its share (repeats if count > length)."""
    return [min(length - 1, int((i + 0.5) * length / count)) for i in range(count)]


def _apportion(weights: list[int], total: int) -> list[int]:
    """Split `total` in proportion to `weights` (largest remainder)."""
    raw = np.asarray(weights, float) / sum(weights) * total
    shares = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - shares))[: total - shares.sum()]:
        shares[i] += 1
    return shares.tolist()
