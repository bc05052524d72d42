"""Which sequence (cine, lge, other) and view (sax, 2ch, 3ch, 4ch, lvot, other) each series is, and why.

Three independent kinds of evidence are weighed, so that blank or misleading descriptions do not decide
alone: the text (SeriesDescription, ProtocolName, SequenceName, across vendors' naming), the timing and
image type (phases over the R-R interval, TriggerTime, InversionTime, ImageType flags) and the geometry
(parallel stacks, the angle to the short-axis stack, where a long-axis plane sits around the LV long axis).
Each piece of evidence adds a score to a role or a view and a human-readable reason.

Only cine and LGE are used; everything else a protocol holds is recognised and set aside with its reasons:
T2-weighted imaging (STIR/TIRM, SPAIR, TSE/FSE, black-blood DIR), multi-echo T2*, first-pass perfusion,
tagging, phase-contrast flow (magnitude and phase), T1/T2/ECV maps and their raw images, angiography,
reformats, secondary captures, localizers and TI scouts. LGE needs positive evidence consistent with LGE
(an inversion-recovery gradient echo with an inversion time in the LGE range for the field strength, or
naming), and a cine a gradient-echo readout over the cardiac cycle; a positive identification of another
contrast always wins over them, so that no other contrast fills a cine or LGE slot.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections import defaultdict

import numpy as np

from .geometry import angle_between_planes, are_parallel, long_axis_rotation
from .grouping import image_flavour, mark_repeat
from .headers import SECONDARY_CAPTURE_PREFIX
from .study import SEQUENCES, VIEWS, Series

ROLE_TO_SEQUENCE = {"cine": "cine", "lge": "lge", "lge_psir": "lge"}

# (role, pattern, weight). Patterns run on the lower-cased description, protocol and sequence name.
ROLE_PATTERNS = [
    ("ti_scout", r"ti[ _-]?scout|look[ _-]?locker|ti[ _-]?find|tfind|ti[ _-]?test|\btiscout", 3.0),
    ("localizer", r"locali[sz]er|\bloc\b|_loc\b|scout|survey|tri[ _-]?pilot|3[ _-]?pl(ane)?\b|\bpilot|haste", 2.5),
    ("map", r"\bmap|map\b|_map|molli|sasha|\bt1[ _-]?map|\bt2[ _-]?map|\becv\b|mapping", 2.5),
    ("t2star", r"t2\*|t2[ _-]?star|\bt2s(\b|_)|gre[ _-]?me\b|\bme[ _-]?gre|multi[ _-]?echo|\bmfgre|\bmge\b", 3.0),
    ("t2w", r"stir|tirm|\btir|spair|\btse|_tse|tse2d|\bfse|fse[ _-]?xl|t2[ _-]?w|dark[ _-]?blood|black[ _-]?blood"
            r"|\bbb\b|\bbb[ _-]|_bb\b|\bdir\b|\bdir[ _-]|_dir\b|o?edema|\bt2[ _-]?(prep|fs|bb)\b", 3.0),
    ("flow", r"flow|phase[ _-]?contrast|\bpc\b|\bpc[ _-]|_pc\b|venc|\bvel|\bpca\b", 3.0),
    ("perfusion", r"perf|first[ _-]?pass|\bfpp\b|adenosine|regadenoson|\bsr[ _-]?(tfe|fgre|gre|ssfp|flash)|fgre[ _-]?et\b", 3.0),
    ("tagging", r"\btag|_tag|tagg|spamm|\bgrid|_grid", 3.0),
    ("angio", r"angio|\bmra\b|_mra|mra_|\btof\b|whole[ _-]?heart|coronar|\bmip\b", 3.0),
    ("reformat", r"\bmpr\b|reformat|\brfmt\b", 2.0),
    ("secondary", r"screen[ _-]?(save|capture|shot)|\bsecondary\b|\breport\b|argus|cvi42", 2.5),
    ("cine", r"cine|fiesta|trufi|tfi2d|true[ _-]?fisp|ssfp|b[ _-]?tfe|sbtfe|retro", 2.0),
    ("lge", r"\blge|\bde[ _]|^de_|\bmde|psir|delayed|late|viab|ir[ _-]?tfe|ir[ _-]?fgre|tfl2d|phase[ _-]?sens|enhancement", 2.0),
]
# Roles whose positive identification (this much evidence) sets a series aside whatever else it resembles.
SET_ASIDE_ROLES = ("ti_scout", "map", "t2star", "t2w", "flow", "perfusion", "tagging", "angio")
POSITIVE_IDENTIFICATION = 3.0
ANGIO_FLAGS = {"MIP", "ANGIO", "MRA"}
# Inversion times (ms) consistent with LGE: the myocardial null after gadolinium, longer at 3 T (T1 is).
LGE_INVERSION_MS = {1.5: (200.0, 450.0), 3.0: (230.0, 600.0)}
LONG_ECHO_MS = 30.0  # T2-weighted spin echo; cine and LGE gradient echoes stay under ~5 ms
MULTI_ECHO_SPREAD_MS = 4.0  # T2* echoes span ~2-20 ms; rounding jitter of one TE is far below this
VIEW_PATTERNS = [
    ("lvot", r"lvot|outflow"),
    ("2ch", r"2[ _-]?ch|two[ _-]?ch|\bvla|vlax|2[ _-]?cv|\b2c\b"),
    ("3ch", r"3[ _-]?ch|three[ _-]?ch|\b3c\b"),
    ("4ch", r"4[ _-]?ch|four[ _-]?ch|\bhla|hlax|\b4c\b"),
    ("sax", r"\bsax|\bsa\b|_sa\b|\bsa_|short[ _-]?ax|\bsa[ _-]|stack"),
]
# Where each long-axis view sits around the LV long axis (see geometry.long_axis_rotation), in degrees, and
# how far a study's planning may turn all of them together (the heart's own roll about its axis).
LAX_ROTATION = {"4ch": 0.0, "3ch": 60.0, "2ch": 115.0}
LAX_COMMON_TURN = 35.0
NAME_CONFLICT_COST = 45.0**2
SAME_VIEW_DEGREES = 12.0
SAME_PLANE_MM = 2.0


def classify_sequence(series: Series, part_of_multiplane: bool = False) -> None:
    """Set `series.role`, `sequence`, `confidence` and reasons from text, timing and image type."""
    scores: dict[str, float] = defaultdict(float)
    reasons: list[str] = []

    def add(role: str, weight: float, reason: str) -> None:
        scores[role] += weight
        reasons.append(f"{role} +{weight:g}: {reason}")

    _text_evidence(series, add)
    _image_type_evidence(series, add)
    _readout_evidence(series, add)
    _timing_evidence(series, add)
    if part_of_multiplane:
        add("localizer", 2.0, "one DICOM series holding several plane orientations")
    role, confidence = _decide(scores)
    used_role = max(ROLE_TO_SEQUENCE, key=lambda r: scores.get(r, 0.0))
    if role in SET_ASIDE_ROLES and scores.get(used_role, 0.0) >= scores[role]:
        reasons.append(f"set aside as {role}: positively identified, which outweighs its {used_role} evidence")
    series.role, series.sequence, series.confidence = role, ROLE_TO_SEQUENCE.get(role, "other"), confidence
    series.reasons.extend(reasons or ["no evidence for any sequence"])


def _text(series: Series) -> str:
    frame = series.first_frame
    return " ".join([series.description, frame.protocol_name, frame.sequence_name]).lower()


def _text_evidence(series: Series, add) -> None:
    text = _text(series)
    if not text.strip():
        return
    for role, pattern, weight in ROLE_PATTERNS:
        match = re.search(pattern, text)
        if match:
            add(role, weight, f"description/protocol mentions '{match.group(0).strip()}'")
            if role == "ti_scout":
                return  # "TI scout" also matches the localizer pattern


def _image_type_evidence(series: Series, add) -> None:
    frame = series.first_frame
    flags = set(frame.image_type)
    joined = " ".join(frame.image_type)
    if "LOCALIZER" in flags:
        add("localizer", 4.0, "ImageType LOCALIZER")
    if re.search(r"T1[ _]?MAP|T2[ _]?MAP|T2\*[ _]?MAP|\bMAP\b|MOLLI|\bECV\b|\bR2\*", joined):
        add("map", 4.0, f"ImageType {joined} (parametric map)")
    if flags & ANGIO_FLAGS:
        add("angio", 4.0, f"ImageType {joined} (angiography)")
    if flags & {"PCA", "M_PCA", "P_PCA", "VELOCITY", "VELOCITY MAP"}:
        add("flow", 4.0, f"ImageType {joined} (phase-contrast acquisition)")
    if frame.tagging in ("GRID", "LINE"):
        add("tagging", 5.0, f"Tagging {frame.tagging} (SPAMM tag lines over the cine)")
    reformat = "MPR" in flags or "REFORMATTED" in flags or "PROJECTION IMAGE" in joined
    derived_view = reformat or bool(flags & ANGIO_FLAGS)  # ImageType SECONDARY on these says "derived", no more
    if frame.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX) or ("SECONDARY" in flags and not derived_view):
        add("secondary", 5.0, "secondary capture")
    if reformat:
        add("reformat", 4.0, f"ImageType {joined} (reformat)")
    phase_image = image_flavour(frame) == "phase"
    if phase_image and (re.search(r"_v\d|v\d+in|venc", frame.sequence_name.lower()) or "VELOCITY" in joined):
        add("flow", 4.0, "velocity-encoded phase image (phase contrast)")
    elif phase_image and series.n_phases >= 5:
        add("flow", 3.0, f"phase images over {series.n_phases} cardiac phases (phase-contrast velocity)")
    elif phase_image:
        add("lge_psir", 1.5, f"phase-sensitive or real reconstruction (ImageType {joined})")


def _readout_evidence(series: Series, add) -> None:
    """Spin echo and long echo times (T2 weighting), several echo times (multi-echo T2*)."""
    frame = series.first_frame
    echoes = sorted({round(f.echo_time, 1) for f in series.frames if f.echo_time is not None})
    if len(echoes) >= 3 and series.n_phases >= 3 and echoes[-1] - echoes[0] >= MULTI_ECHO_SPREAD_MS:
        add("t2star", 4.0, f"{len(echoes)} echo times ({echoes[0]:g}-{echoes[-1]:g} ms) at each slice position: "
                           "multi-echo gradient echo (T2*)")
    if _spin_echo(frame):
        train = f", echo train of {frame.echo_train_length}" if frame.echo_train_length else ""
        add("t2w", 3.0, f"spin-echo readout (ScanningSequence {frame.scanning_sequence}{train}: TSE/FSE), "
                        "not the gradient echo of cine or LGE")
    if len(echoes) == 1 and echoes[0] >= LONG_ECHO_MS:
        add("t2w", 2.0, f"echo time {echoes[0]:g} ms: T2 weighting")


def _spin_echo(frame) -> bool:
    scanning = set(frame.scanning_sequence.split("\\"))
    return "SE" in scanning and "GR" not in scanning


def lge_inversion_range(field_strength: float | None) -> tuple[float, float]:
    """Inversion times (ms) consistent with LGE at this field strength (both fields' range when unknown)."""
    if field_strength is None:
        return LGE_INVERSION_MS[1.5][0], LGE_INVERSION_MS[3.0][1]
    return LGE_INVERSION_MS[1.5 if field_strength < 2.0 else 3.0]


def _timing_evidence(series: Series, add) -> None:
    per_slice = [len(s) for s in series.grid]
    phases = int(np.median(per_slice))
    triggers = [f.trigger_time for f in series.grid[0] if f.trigger_time is not None]
    inversions = sorted({round(f.inversion_time) for f in series.frames if f.inversion_time})
    span = (max(triggers) - min(triggers)) if len(triggers) >= 2 else 0.0
    frame = series.first_frame
    inversion_recovery = "IR" in frame.scanning_sequence.split("\\")
    gradient_echo = not frame.scanning_sequence or "GR" in frame.scanning_sequence.split("\\")
    if phases >= 5 and len(inversions) >= 4 and span < 100.0:
        add("map", 3.0, f"{len(inversions)} inversion or saturation times at one cardiac phase: T1-mapping raw "
                        "images (MOLLI/ShMOLLI/SASHA)")
    elif phases >= 5 and len(inversions) >= 4:
        add("ti_scout", 3.0, f"{phases} images per slice with {len(inversions)} different inversion times")
    elif phases >= 5 and span >= 150.0 and len(set(triggers)) >= 0.8 * len(triggers):
        if gradient_echo:
            add("cine", 3.0, f"{phases} phases per slice over {span:.0f} ms of the cardiac cycle (TriggerTime)")
    elif phases >= 30 and span < 200.0:
        add("perfusion", 3.0, f"{phases} repetitions per slice at one cardiac phase: dynamic series (first-pass perfusion)")
    if phases <= 2 and len(inversions) == 1:
        _inversion_evidence(series, inversions[0], inversion_recovery and gradient_echo, add)
    if phases == 1 and not inversions and not inversion_recovery and frame.rows * frame.columns <= 256 * 256:
        add("localizer", 0.5, "single image per slice without inversion preparation")


def _inversion_evidence(series: Series, inversion: float, ir_gradient_echo: bool, add) -> None:
    """One image per slice with one inversion time: LGE only on a gradient echo with an LGE-range TI."""
    frame = series.first_frame
    low, high = lge_inversion_range(frame.field_strength)
    at = f" at {frame.field_strength:g} T" if frame.field_strength else ""
    if _spin_echo(frame):
        add("t2w", 1.0, f"InversionTime {inversion} ms on a spin echo: STIR fat suppression, not LGE")
    elif not low <= inversion <= high:
        add("other", 1.0, f"InversionTime {inversion} ms outside the LGE range{at} ({low:g}-{high:g} ms): not LGE")
    else:
        add("lge", 2.5, f"one image per slice with InversionTime {inversion} ms, in the LGE range{at}")
        if ir_gradient_echo:
            add("lge", 1.0, "inversion-recovery gradient echo")
        if frame.contrast_agent:
            add("lge", 0.5, "acquired after contrast (ContrastBolusAgent)")


def _decide(scores: dict[str, float]) -> tuple[str, float]:
    if not scores:
        return "other", 0.3
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    role, top = ranked[0]
    set_aside = max(SET_ASIDE_ROLES, key=lambda r: scores.get(r, 0.0))
    if role in ROLE_TO_SEQUENCE and scores.get(set_aside, 0.0) >= POSITIVE_IDENTIFICATION:
        role, top = set_aside, scores[set_aside]
    if role in ("lge", "lge_psir") and "lge_psir" in scores:
        # a phase-sensitive reconstruction is LGE only with LGE evidence (inversion time, naming)
        role, top = ("lge_psir", scores["lge"] + scores["lge_psir"]) if scores.get("lge", 0) > 0 else ("other", 0.5)
    total = sum(max(v, 0.0) for v in scores.values())
    return role, round(min(1.0, top / (total + 0.5)) * min(1.0, top / 3.0) ** 0.5, 2)


def set_aside_phase_contrast_magnitudes(series: list[Series]) -> None:
    """Magnitude series whose plane and cardiac phases a phase-contrast velocity series repeats are flow, not cine.

    Phase-contrast acquisitions write a magnitude and a velocity (phase) image of every phase; the magnitude
    alone looks like a cine, so it is recognised by its partner, whatever the descriptions say.
    """
    velocities = [s for s in series if s.role == "flow" and image_flavour(s.first_frame) == "phase" and s.normal is not None]
    for item in series:
        if item.role == "flow" or item.normal is None or image_flavour(item.first_frame) == "phase":
            continue
        partner = next((v for v in velocities if _same_plane_and_phases(item, v)), None)
        if partner is not None:
            item.role, item.sequence = "flow", "other"
            item.reasons.append(f"flow +5: phase-contrast magnitude: series {partner.series_number} holds velocity "
                                f"(phase) images of the same plane over the same {partner.n_phases} cardiac phases")


def _same_plane_and_phases(a: Series, b: Series) -> bool:
    if a.n_slices != b.n_slices or a.n_phases != b.n_phases or not are_parallel(a.normal, b.normal):
        return False
    offset = np.asarray(a.first_frame.position, float) - np.asarray(b.first_frame.position, float)
    return abs(float(np.dot(offset, a.normal))) <= SAME_PLANE_MM


def find_sax_reference(series: list[Series]) -> Series | None:
    """The short-axis stack that defines the LV long axis: the cine (else LGE) stack with the most slices."""
    for sequence in ("cine", "lge"):
        stacks = [s for s in series if s.used and s.sequence == sequence and s.n_slices >= 3 and s.normal is not None]
        if stacks:
            return max(stacks, key=lambda s: (s.n_slices, _text_view(s) == "sax"))
    return None


def classify_view(series: Series, reference: Series | None, lax_views: dict | None = None) -> None:
    """Set `series.view` (and fold its confidence into `series.confidence`) from text and geometry."""
    if series.sequence == "other":
        series.view = "other"
        return
    scores: dict[str, float] = defaultdict(float)
    reasons: list[str] = []

    def add(view: str, weight: float, reason: str) -> None:
        scores[view] += weight
        reasons.append(f"{view} +{weight:g}: {reason}")

    text_view = _text_view(series)
    if text_view:
        add(text_view, 2.0, "description/protocol names the view")
    _geometry_evidence(series, reference, lax_views or {}, add)
    if not scores:
        series.view, series.confidence = "other", round(series.confidence * 0.5, 2)
        series.reasons.append("view unknown: no description and no short-axis stack to compare the plane with")
        return
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    view, top = ranked[0]
    total = sum(max(v, 0.0) for v in scores.values())
    series.view = view
    series.confidence = round(series.confidence * min(1.0, top / (total + 0.25)), 2)
    series.reasons.extend(reasons)


def _text_view(series: Series) -> str | None:
    text = " ".join([series.description, series.first_frame.protocol_name]).lower()
    for view, pattern in VIEW_PATTERNS:
        if re.search(pattern, text):
            return view
    return None


def _geometry_evidence(series: Series, reference: Series | None, lax_views: dict, add) -> None:
    if series.normal is None:
        return
    if reference is None:
        if series.n_slices >= 4:
            add("sax", 1.5, f"stack of {series.n_slices} parallel slices")
        return
    if series is reference:
        add("sax", 3.0, f"the study's largest stack of parallel slices ({series.n_slices})")
        return
    angle = angle_between_planes(series.normal, reference.normal)
    if angle <= 20.0:
        add("sax", 2.5, f"plane parallel to the short-axis stack ({angle:.0f} deg)")
        return
    if angle < 60.0:
        return
    distance = _distance_from_long_axis(series, reference)
    if distance > 30.0:
        add("other", 1.0, f"perpendicular to the short axis but {distance:.0f} mm from the LV long axis")
        return
    if id(series) in lax_views:
        view, rotation, gap = lax_views[id(series)]
        weight = round(2.5 * max(0.0, 1.0 - gap / 40.0), 2)
        if weight > 0:
            add(view, weight, f"contains the LV long axis, {rotation:.0f} deg around it (fits the {view} plane within {gap:.0f} deg)")


def assign_long_axis_views(series: list[Series], reference: Series | None) -> dict:
    """Views of the long-axis planes, fitted jointly: {id(series): (view, rotation, gap in degrees)}.

    The planes of one study are grouped by their rotation about the long axis, and the groups matched to
    the 2CH/3CH/4CH rotations allowing one common turn of the whole set (each heart sits a little
    differently), so that the three views' order and spacing decide rather than each angle alone. Views
    named in descriptions anchor the fit (a wider turn is then allowed; a name the geometry contradicts by
    more than ~45 degrees loses).
    """
    if reference is None or reference.normal is None:
        return {}
    rotations, named = {}, {}
    for item in series:
        if item.sequence == "other" or item is reference or item.normal is None:
            continue
        if angle_between_planes(item.normal, reference.normal) >= 60.0 and _distance_from_long_axis(item, reference) <= 30.0:
            rotations[id(item)] = long_axis_rotation(item.normal, reference.normal)
            if _text_view(item) in LAX_ROTATION:
                named[id(item)] = _text_view(item)
    groups = _group_rotations(rotations)
    if not groups:
        return {}
    max_turn = 90.0 if named else LAX_COMMON_TURN
    best = None
    for turn in np.arange(-max_turn, max_turn + 1.0, 1.0):
        for views in itertools.permutations(LAX_ROTATION, min(len(groups), 3)):
            gaps = [_angular_gap(centre, LAX_ROTATION[v] + turn) for (centre, _), v in zip(groups, views)]
            conflicts = sum(named.get(key, view) != view for (_, members), view in zip(groups, views) for key in members)
            cost = sum(g * g for g in gaps) + 0.5 * turn * turn / len(groups) + NAME_CONFLICT_COST * conflicts
            if best is None or cost < best[0]:
                best = (cost, turn, views)
    _, turn, views = best
    result = {}
    for (centre, members), view in zip(groups, views):
        for key in members:
            result[key] = (view, rotations[key], _angular_gap(rotations[key], LAX_ROTATION[view] + turn))
    return result


def _group_rotations(rotations: dict) -> list[tuple[float, list]]:
    """Rotations within SAME_VIEW_DEGREES of each other are one view (repeats, cine and LGE of one plane)."""
    groups: list[tuple[float, list]] = []
    for key, rotation in sorted(rotations.items(), key=lambda item: item[1]):
        for index, (centre, members) in enumerate(groups):
            if _angular_gap(rotation, centre) <= SAME_VIEW_DEGREES:
                members.append(key)
                break
        else:
            groups.append((rotation, [key]))
    return groups[:3] if len(groups) <= 3 else sorted(groups, key=lambda g: -len(g[1]))[:3]


def _angular_gap(a: float, b: float) -> float:
    gap = abs(a - b) % 180.0
    return min(gap, 180.0 - gap)


def _distance_from_long_axis(series: Series, reference: Series) -> float:
    """Distance from the short-axis stack's centre line to the plane of `series`, in mm."""
    centre = _image_centre(reference.grid[len(reference.grid) // 2][0])
    point = np.asarray(series.first_frame.position, float)
    return abs(float(np.dot(centre - point, series.normal)))


def _image_centre(frame) -> np.ndarray:
    row, col = np.asarray(frame.orientation[:3]), np.asarray(frame.orientation[3:])
    spacing = frame.pixel_spacing or (1.0, 1.0)
    return np.asarray(frame.position, float) + row * spacing[1] * frame.columns / 2 + col * spacing[0] * frame.rows / 2


def resolve_repeats(series: list[Series]) -> None:
    """Of several used series with the same (role, view), the last complete one wins; the others are set aside."""
    groups: dict[tuple, list[Series]] = defaultdict(list)
    for item in series:
        if item.used and item.sequence != "other":
            groups[(item.role, item.view)].append(item)
    for members in groups.values():
        if len(members) < 2:
            continue
        full = max(m.n_slices * m.n_phases for m in members)
        good = [m for m in members if m.n_slices * m.n_phases >= 0.9 * full]
        winner = max(good, key=lambda m: m.acquisition_order)
        for member in members:
            if member is not winner:
                mark_repeat(member, winner)


def apply_overrides(series: list[Series], overrides: dict | None) -> None:
    """Force a classification: keys are SeriesInstanceUIDs or description patterns (fnmatch, case-insensitive).

    Values are (sequence, view) tuples or dicts with 'sequence' and/or 'view'.
    """
    for key, value in (overrides or {}).items():
        sequence, view = (value.get("sequence"), value.get("view")) if isinstance(value, dict) else value
        if sequence is not None and sequence not in SEQUENCES or view is not None and view not in VIEWS:
            from .errors import LayoutError

            raise LayoutError(f"override {key!r}: sequence must be one of {SEQUENCES} and view one of {VIEWS}, got {value!r}")
        for item in series:
            if key in item.series_instance_uids or fnmatch.fnmatch(item.description.lower(), key.lower()):
                if sequence is not None:
                    item.sequence = sequence
                    item.role = sequence if sequence != "other" else "other"
                if view is not None:
                    item.view = view
                item.overridden, item.confidence, item.used = True, 1.0, True
                item.reasons.append(f"classification overridden by the user ({key!r} -> {sequence or item.sequence}/{view or item.view})")
