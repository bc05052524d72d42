"""Which sequence (cine, lge, other) and view (sax, 2ch, 3ch, 4ch, lvot, other) each series is, and why.

Three independent kinds of evidence are weighed, so that blank or misleading descriptions do not decide
alone: the text (SeriesDescription, ProtocolName, SequenceName, across vendors' naming), the timing and
image type (phases over the R-R interval, TriggerTime, InversionTime, ImageType flags) and the geometry
(parallel stacks, the angle to the short-axis stack) and, for long-axis planes, the study's own anatomy:
which AHA walls the plane cuts, relative to the septum found in the short-axis cine (see `anatomy`).
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
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..vocabulary import SEQUENCES, VIEWS
from .anatomy import HeartAnatomy, locate_heart
from .errors import LayoutError
from .geometry import angle_between_planes, are_parallel
from .grouping import image_flavour, mark_repeat
from .headers import SECONDARY_CAPTURE_PREFIX
from .study import Series

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
SAME_PLANE_MM = 2.0
# The AHA segment model: going round a short-axis slice from the anterior wall (0 deg) towards the septum,
# walls are 60 degrees wide, centred at 0 anterior, 60 anteroseptal, 120 inferoseptal, 180 inferior, 240
# inferolateral, 300 anterolateral. A long-axis plane cuts two opposite walls, so its line through the LV
# names the view: 2CH anterior + inferior, 3CH anteroseptal + inferolateral, 4CH inferoseptal + anterolateral.
LAX_VIEW_AHA = {"2ch": 0.0, "3ch": 60.0, "4ch": 120.0}
LAX_WALLS = {"2ch": "anterior + inferior", "3ch": "anteroseptal + inferolateral", "4ch": "inferoseptal + anterolateral"}
# A plane this close to the border between two views' walls is given neither: the margin the anatomy must clear.
VIEW_MARGIN_DEGREES = 10.0
LAX_MIN_ANGLE_TO_SAX = 60.0
LAX_MAX_DISTANCE_MM = 30.0


@dataclass(frozen=True)
class LongAxisEvidence:
    """What the study's anatomy says about one long-axis plane: a view (None when it cannot tell) and why."""

    view: str | None
    reason: str


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
    lax = (lax_views or {}).get(id(series))
    if lax is not None:
        _decide_long_axis_view(series, text_view, lax)
        return
    if text_view:
        add(text_view, 2.0, "description/protocol names the view")
    _geometry_evidence(series, reference, add)
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


def _decide_long_axis_view(series: Series, text_view: str | None, lax: LongAxisEvidence) -> None:
    """A long-axis plane's view: the anatomy and the description agree, one alone speaks, or 'other' with a warning."""
    named = text_view if text_view in (*LAX_VIEW_AHA, "lvot") else None
    series.reasons.append(f"long-axis plane: {lax.reason}")
    if named:
        series.reasons.append(f"{named}: description/protocol names the view")
    if named is None and lax.view:
        series.view = lax.view
    elif named and (lax.view in (None, named) or named == "lvot"):
        series.view = named
        if lax.view is None:
            series.confidence = round(series.confidence * 0.8, 2)
    elif named:
        series.view = named
        series.confidence = round(series.confidence * 0.4, 2)
        series.view_warning = (f"the description names {named} but the plane cuts the {LAX_WALLS[lax.view]} "
                               f"walls ({lax.view}); the description was kept, check this series")
    else:
        series.view = "other"
        series.confidence = round(series.confidence * 0.5, 2)
        series.view_warning = f"long-axis plane left as view 'other': {lax.reason}"


def _geometry_evidence(series: Series, reference: Series | None, add) -> None:
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
    elif angle >= LAX_MIN_ANGLE_TO_SAX:
        add("other", 1.0, f"perpendicular to the short axis but more than {LAX_MAX_DISTANCE_MM:.0f} mm from the LV long axis")


def assign_long_axis_views(series: list[Series], reference: Series | None) -> dict:
    """The anatomy's view of every long-axis plane: {id(series): LongAxisEvidence}.

    Long-axis planes are the cine and LGE planes at least 60 degrees from the short-axis stack that pass
    within 30 mm of the LV. Only when there are some is the heart located (a few frames of the
    short-axis cine decoded, see `anatomy.locate_heart`). Each plane's line in the short-axis slice is
    placed by its AHA angle from the anterior wall; the view is the one whose walls it cuts, given only
    when it clears the border to the next view's walls by VIEW_MARGIN_DEGREES.
    """
    if reference is None or reference.normal is None:
        return {}
    candidates = [item for item in series if item.sequence != "other" and item is not reference and item.normal is not None
                  and angle_between_planes(item.normal, reference.normal) >= LAX_MIN_ANGLE_TO_SAX]
    if not candidates:
        return {}
    anatomy, why = locate_heart(reference)
    centre = anatomy.lv_centre if anatomy else _image_centre(reference.grid[len(reference.grid) // 2][0])
    result = {}
    for item in candidates:
        if _distance_from_long_axis(item, centre) > LAX_MAX_DISTANCE_MM:
            continue
        result[id(item)] = _anatomy_view(item, anatomy) if anatomy else LongAxisEvidence(None, f"view not placed: {why}")
    return result


def _anatomy_view(series: Series, anatomy: HeartAnatomy) -> LongAxisEvidence:
    line = np.cross(anatomy.long_axis, series.normal)
    aha = anatomy.aha_angle(line / np.linalg.norm(line)) % 180.0
    gaps = {view: _angular_gap(aha, centre) for view, centre in LAX_VIEW_AHA.items()}
    view = min(gaps, key=gaps.get)
    margin = 30.0 - gaps[view]
    where = (f"its line through the LV lies at AHA {aha:.0f}/{aha + 180:.0f} deg from the anterior wall "
             f"(septum from the RV in the short-axis cine, {anatomy.frames_decoded} frames decoded)")
    if margin < VIEW_MARGIN_DEGREES:
        neighbour = sorted(gaps, key=gaps.get)[1]
        return LongAxisEvidence(None, f"{where}, {margin:.0f} deg from the border between the {view} and {neighbour} "
                                      f"walls (less than the {VIEW_MARGIN_DEGREES:.0f} deg margin)")
    return LongAxisEvidence(view, f"{where}: cuts the {LAX_WALLS[view]} walls ({view}, {margin:.0f} deg inside)")


def _angular_gap(a: float, b: float) -> float:
    gap = abs(a - b) % 180.0
    return min(gap, 180.0 - gap)


def _distance_from_long_axis(series: Series, centre: np.ndarray) -> float:
    """Distance from a point on the LV long axis to the plane of `series`, in mm."""
    point = np.asarray(series.first_frame.position, float)
    return abs(float(np.dot(centre - point, series.normal)))


def _image_centre(frame) -> np.ndarray:
    row, col = np.asarray(frame.orientation[:3]), np.asarray(frame.orientation[3:])
    spacing = frame.pixel_spacing or (1.0, 1.0)
    return np.asarray(frame.position, float) + row * spacing[1] * frame.columns / 2 + col * spacing[0] * frame.rows / 2


def resolve_repeats(series: list[Series]) -> None:
    """Of several used series with the same (role, view), the last complete one wins; the others are set aside.

    Series of view 'other' are not repeats of each other: they may be different planes left unnamed.
    """
    groups: dict[tuple, list[Series]] = defaultdict(list)
    for item in series:
        if item.used and item.sequence != "other" and item.view != "other":
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
