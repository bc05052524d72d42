"""Rule-based extraction of findings from cardiac MRI impressions, with negation, grades and LV/RV.

The vocabulary is the synthetic cohort's eight boolean labels (`FINDINGS`) plus the diagnosis
(`DIAGNOSES`) where an impression states one. It serves the clinical-accuracy metric of report
generation (`report_metrics.clinical_accuracy`) and checks that the synthetic reports say what their
labels say. Plain regular expressions, no NLP dependency; the rules, in the order they run:

1. Sentences: split at `.`/`!`/`?` followed by white space and at line breaks; list numbers ("1.")
   dropped. Parentheses that hold a number ("(LVEF 64%)", "(12 mm)") are removed: numbers are never
   read, so "LVEF 35%" alone states nothing. Diagnosis names ("dilated cardiomyopathy", "hypertrophic
   cardiomyopathy") are read as the diagnosis and then blanked, so they are not read as findings.
2. Structures: LV ("LV", "LVEF", "LVH", "left ventricle/ventricular"), RV, both ("biventricular",
   "left and right ventricular", "LV and RV"), the aorta ("aortic root", "ascending aorta", "sinus of
   Valsalva") and other structures (atria, pulmonary artery, IVC, coronary sinus), whose findings are
   outside the vocabulary and ignored.
3. Attributes: size (dilated, dilatation, enlarged; "aneurysmal"/"ectatic" for the aorta only;
   non-dilated), systolic function (dysfunction; reduced, impaired, depressed, decreased, poor,
   preserved, hyperdynamic; diastolic function, filling, wall motion and perfusion are not systolic
   function) and wall thickness (hypertrophy, thickened; LV only). "reduced", "impaired" and
   "preserved" count as function only in a chunk that names function or no attribute at all, so
   "reduced wall thickness" is not dysfunction. LGE ("late gadolinium/delayed enhancement", "LGE",
   "scar", "fibrosis", "infarct") and pericardial effusion ("effusion", unless it is a pleural one)
   are findings on their own.
4. Binding: a sentence is cut into chunks at `,;:`, "and" (unless it joins attributes: "size and
   systolic function"), "with", "but", "whereas", "while", "although". An attribute belongs to the
   nearest structure in its chunk, else to the structure of the nearest earlier chunk ("Dilated right
   ventricle | with preserved systolic function"), else of the next one ("Mildly dilated | and
   severely impaired left ventricle"), else to the LV: an unnamed ventricle in an impression is the LV.
   Hypertrophy is not inherited: it is the LV's unless its own chunk names another structure.
5. "normal" (and "unremarkable") rules out the attributes it names ("Normal RV size and systolic
   function"), looking forward to the end of its scope and then back ("LV function is normal"); where it
   names no attribute it rules out a named structure's size and function ("Normal LV"). "increased"
   and "elevated" state size or wall thickness the same way ("wall thickness is increased").
6. Negation: "no", "not", "without", "absence of", "negative for", "free of", "nor" negate what follows
   them; "not seen/identified/present/demonstrated/...", "absent" and "none" negate what precedes them.
   A scope ends at `;`, at "but", "however", "although", "whereas", "while", "with", and at a comma or
   "and" that starts a new statement (followed by a grade or an adjective such as "dilated", "normal",
   "preserved"), so "No LGE, pericardial effusion or LV hypertrophy" negates all three while "No LGE,
   dilated LV" does not negate the dilatation; a colon does not end it ("LGE: none"). A negated
   "normal"/"preserved" states the finding.
7. Grades: the nearest grade before the term in its chunk: mild, moderate, severe ("markedly" is
   severe), ranges such as "mild-moderate"; for effusions trace (also "trivial"), small, moderate,
   large.
8. A finding is present if any statement affirms it; negated if statements only rule it out; absent
   from `extract_findings` if nothing mentions it. The diagnosis is the first one stated and not negated.

Not handled: uncertainty ("cannot be excluded", "possible"), temporal change ("resolved") and regional
wall motion; numbers are not compared with thresholds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..processing.processing_cmr_target import split_sentences
from ..vocabulary import DIAGNOSES, FINDINGS


@dataclass(frozen=True)
class FindingMention:
    """What an impression says about one finding: present or ruled out, its grade, and where it is said."""

    finding: str
    present: bool
    grade: str | None
    text: str


def _rx(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


# --- vocabulary -----------------------------------------------------------------------------------
_GRADE_WORD = r"(?:mild|moderate|severe|marked)(?:ly)?"
_GRADE = _rx(rf"\b{_GRADE_WORD}(?:\s*(?:to|-)\s*{_GRADE_WORD})?\b")
_EFFUSION_GRADE = _rx(r"\b(?:trace|trivial|small|mild|moderate|large)\b")

_STRUCTURES = _rx(
    r"(?P<both>\bbi-?ventricular\b|\bboth ventricles\b|\b(?:left and right|right and left) ventric\w*"
    r"|\bLV and RV\b|\bRV and LV\b)"
    r"|(?P<lv>\bLV(?:EF|H)?\b|\bleft ventric\w*)"
    r"|(?P<rv>\bRV(?:EF)?\b|\bright ventric\w*)"
    r"|(?P<aorta>\baort\w*|\bsinus(?:es)? of valsalva\b|\bsinotubular\b)"
    r"|(?P<other>\b(?:bi-?)?atri(?:um|a|al)\b|\bpulmonary arter\w*|\bvena cava\b|\bIVC\b|\bcoronary sinus\b)"
)
_ATTRIBUTES_OF = {"lv": ("size", "function", "thickness"), "rv": ("size", "function"), "aorta": ("size",), "other": ()}
_FINDING_OF = {
    ("lv", "size"): "lv_dilation",
    ("lv", "function"): "lv_dysfunction",
    ("lv", "thickness"): "lv_hypertrophy",
    ("rv", "size"): "rv_dilation",
    ("rv", "function"): "rv_dysfunction",
    ("aorta", "size"): "aortic_dilation",
}

_NOUNS = {
    "size": _rx(r"\bsize\b|\bvolumes?\b|\bdimensions?\b|\bcavity\b|\bcalib(?:er|re)\b|\bdiameter\b"),
    "function": _rx(r"(?<!diastolic )\b(?:function|ejection fraction|EF|LVEF|RVEF|contractility|contraction)\b"),
    "thickness": _rx(r"\b(?:wall )?thickness\b|\bmass\b"),
    "other": _rx(r"\bdiastolic\b|\bfilling\b|\brelaxation\b|\bwall motion\b|\bperfusion\b|\bstrain\b"),
}


@dataclass(frozen=True)
class _Term:
    pattern: re.Pattern
    attribute: str
    present: bool  # True: the term states the finding; False: it rules it out
    generic: bool = False  # counts only where its chunk names this attribute or none at all
    structures: tuple = ("lv", "rv", "aorta")


_TERMS = (
    _Term(_rx(r"(?<!non-)\bdilat\w*|\benlarg\w*"), "size", True),
    _Term(_rx(r"\baneurysm\w*|\bectatic\b|\bectasia\b"), "size", True, structures=("aorta",)),
    _Term(_rx(r"\bnon-?dilated\b|\bnormal-sized\b"), "size", False),
    _Term(_rx(r"(?<!diastolic )\bdysfunction\b|\bglobal(?:ly)? hypokine\w*"), "function", True),
    _Term(_rx(r"\b(?:reduced|impaired|depressed|decreased|poor|diminished)\b"), "function", True, generic=True),
    _Term(_rx(r"\bpreserved\b"), "function", False, generic=True),
    _Term(_rx(r"\bhyperdynamic\b|\bhypercontractile\b|\bsupra-?normal\b"), "function", False),
    _Term(_rx(r"(?<!non-)\bhypertroph\w*|\bLVH\b|\bthickened\b"), "thickness", True),
)
# Qualifiers of the attributes they name (rule 5): pattern, what they state, the attributes they can
# qualify, and those they qualify when they name only a structure ("Normal LV").
_QUALIFIERS = (
    (_rx(r"\bnormal\b|\bunremarkable\b"), False, ("size", "function", "thickness"), ("size", "function")),
    (_rx(r"\bincreased\b|\belevated\b"), True, ("size", "thickness"), ()),
)
_LGE = _rx(r"\b(?:late|delayed)(?: gadolinium)? enhancement\b|\bgadolinium enhancement\b|\bLGE\b|\bscar\w*"
           r"|\bfibrosis\b|\binfarct\w*")
_EFFUSION = _rx(r"\beffusions?\b")
_PLEURAL_BEFORE = _rx(r"\bpleural\s+$")
_PERICARDIAL = _rx(r"\bpericardi\w*")

_DIAGNOSIS_PATTERNS = {
    "normal": _rx(r"\bnormal (?:cardiac |cardiovascular )?(?:MRI|CMR|MR|study|examination|scan)\b"
                  r"|\bstructurally normal heart\b"),
    "icm": _rx(r"(?<!non-)(?<!non )\bisch(?:a)?emic (?:cardiomyopathy|heart disease)\b|\bICM\b"),
    "nicm": _rx(r"\bnon-?\s?isch(?:a)?emic cardiomyopathy\b|\bdilated cardiomyopathy\b|\bNICM\b|\bDCM\b"),
    "hcm": _rx(r"\bhypertrophic (?:obstructive )?cardiomyopathy\b|\bHO?CM\b"),
    "amyloidosis": _rx(r"\bamyloid\w*"),
}

_NEGATION_FORWARD = _rx(r"\bno\b|\bnot\b|\bwithout\b|\babsence of\b|\bnegative for\b|\bfree of\b|\bnor\b|\bneither\b")
_NEGATION_BACKWARD = _rx(r"\bnot (?:seen|identified|present|demonstrated|visuali[sz]ed|detected|evident"
                         r"|appreciated|noted)\b|\babsent\b|\bnone\b")
_NEW_STATEMENT = (rf"(?=\s*(?:{_GRADE_WORD}|dilated|enlarged|reduced|impaired|depressed|decreased|preserved"
                  r"|normal|hyperdynamic|small|large|trace|trivial)\b)")
_SCOPE_END = _rx(rf";|\b(?:but|however|although|though|whereas|while|except|with)\b"
                 rf"|(?:,|\band\b){_NEW_STATEMENT}")
_CHUNK_END = _rx(r"[;:,]|\b(?:with|but|however|whereas|while|although|though)\b"
                 r"|\band\b(?!\s+(?:(?:systolic|global|cavity|wall)\s+)?"
                 r"(?:size|function|volumes?|thickness|dimensions?))")
# A parenthesis holding a digit ("(LVEF 45%)"): a measurement, not a statement (prompt mining drops it too).
NUMERIC_PARENTHESIS = _rx(r"\([^()]*\d[^()]*\)")
_LGE_SEQUENCE = _rx(r"\b(?:LGE|late gadolinium enhancement) (?:imaging|images|sequences?)\b")


# --- sentences, scopes and chunks -----------------------------------------------------------------
def _blank(text: str, spans) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _spans_between(pattern: re.Pattern, sentence: str, protected=()) -> list[tuple[int, int]]:
    """Stretches of `sentence` between matches of `pattern` (matches inside `protected` spans ignored)."""
    cuts = [m for m in pattern.finditer(sentence) if not any(a <= m.start() < b for a, b in protected)]
    starts = [0, *(m.end() for m in cuts)]
    ends = [*(m.start() for m in cuts), len(sentence)]
    return list(zip(starts, ends))


def _span_of(spans, position: int) -> tuple[int, int]:
    """The last span that starts at or before `position`."""
    return [s for s in spans if s[0] <= position][-1]


def _negated(sentence: str, scopes, position: int) -> bool:
    start, end = _span_of(scopes, position)
    scope = sentence[start:end]
    return (any(start + m.end() <= position for m in _NEGATION_FORWARD.finditer(scope))
            or any(position < start + m.start() for m in _NEGATION_BACKWARD.finditer(scope)))


def _grade(sentence: str, chunk, position: int, pattern: re.Pattern = _GRADE) -> str | None:
    before = [m for m in pattern.finditer(sentence, chunk[0], position)]
    if not before:
        return None
    words = re.findall(r"mild|moderate|severe|marked|trace|trivial|small|large", before[-1].group(0).lower())
    return "-".join({"marked": "severe", "trivial": "trace"}.get(w, w) for w in words)


# --- statements -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Statement:
    finding: str
    present: bool
    grade: str | None


class _Sentence:
    """One prepared sentence: its structures, chunks and negation scopes, and what it states."""

    def __init__(self, sentence: str):
        self.plain = NUMERIC_PARENTHESIS.sub(lambda m: " " * len(m.group(0)), sentence)
        self.diagnoses = [(name, m) for name, rx in _DIAGNOSIS_PATTERNS.items() for m in rx.finditer(self.plain)]
        masked = _blank(self.plain, [m.span() for _, m in self.diagnoses])
        self.s = _blank(masked, [m.span() for m in _LGE_SEQUENCE.finditer(masked)])
        self.structures = [(m.lastgroup, m.start()) for m in _STRUCTURES.finditer(self.s)]
        protected = [m.span() for m in _STRUCTURES.finditer(self.s)]
        self.chunks = _spans_between(_CHUNK_END, self.s, protected)
        self.scopes = _spans_between(_SCOPE_END, self.s, protected)

    def negated(self, position: int) -> bool:
        return _negated(self.s, self.scopes, position)

    def _structures_in(self, chunk) -> list[tuple[str, int]]:
        return [(name, pos) for name, pos in self.structures if chunk[0] <= pos < chunk[1]]

    def structure_at(self, position: int, inherit: bool = True) -> str:
        """The structure an attribute at `position` belongs to (rule 4 of the module docstring)."""
        chunk = _span_of(self.chunks, position)
        own = self._structures_in(chunk)
        if own:
            return min(own, key=lambda s: abs(s[1] - position))[0]
        if inherit:
            index = self.chunks.index(chunk)
            for earlier in reversed(self.chunks[:index]):
                if self._structures_in(earlier):
                    return self._structures_in(earlier)[-1][0]
            for later in self.chunks[index + 1:]:
                if self._structures_in(later):
                    return self._structures_in(later)[0][0]
        return "lv"

    def nouns_in(self, start: int, end: int) -> dict[str, list[int]]:
        return {a: [m.start() for m in rx.finditer(self.s, start, end)] for a, rx in _NOUNS.items()}

    def statements(self) -> list[_Statement]:
        return [*self._term_statements(), *self._qualifier_statements(), *self._lge_statements(),
                *self._effusion_statements()]

    def _attribute_statements(self, structure: str, attribute: str, present: bool, position: int,
                              allowed=("lv", "rv", "aorta")) -> list[_Statement]:
        present = present != self.negated(position)
        grade = _grade(self.s, _span_of(self.chunks, position), position) if present else None
        targets = ("lv", "rv") if structure == "both" else (structure,)
        return [_Statement(_FINDING_OF[t, attribute], present, grade) for t in targets
                if t in allowed and attribute in _ATTRIBUTES_OF[t]]

    def _term_statements(self) -> list[_Statement]:
        out = []
        for term in _TERMS:
            for m in term.pattern.finditer(self.s):
                if term.generic and not self._generic_applies(m.start(), term.attribute):
                    continue
                structure = self.structure_at(m.start(), inherit=term.attribute != "thickness")
                out += self._attribute_statements(structure, term.attribute, term.present, m.start(), term.structures)
        return out

    def _generic_applies(self, position: int, attribute: str) -> bool:
        nouns = self.nouns_in(*_span_of(self.chunks, position))
        return bool(nouns[attribute]) or not any(nouns.values())

    def _qualifier_statements(self) -> list[_Statement]:
        """What each "normal" rules out and each "increased" states (rule 5): the attributes it names,
        looking forward in its scope and then back, else the size and function of a named structure."""
        out = []
        for pattern, present, attributes, of_structure in _QUALIFIERS:
            for m in pattern.finditer(self.s):
                out += self._qualified(m, present, attributes, of_structure)
        return out

    def _qualified(self, m: re.Match, present: bool, attributes, of_structure) -> list[_Statement]:
        scope = _span_of(self.scopes, m.start())
        for start, end in ((m.end(), scope[1]), (scope[0], m.start())):
            nouns = self.nouns_in(start, end)
            if any(nouns.values()):
                return [st for attribute in attributes for pos in nouns[attribute]
                        for st in self._attribute_statements(self.structure_at(pos), attribute, present, m.start())]
            named = [name for name, pos in self.structures if start <= pos < end]
            if named:
                return [st for name in named for attribute in of_structure
                        for st in self._attribute_statements(name, attribute, present, m.start())]
        return []

    def _lge_statements(self) -> list[_Statement]:
        return [_Statement("lge", not self.negated(m.start()), None) for m in _LGE.finditer(self.s)]

    def _effusion_statements(self) -> list[_Statement]:
        out = []
        for m in _EFFUSION.finditer(self.s):
            window = self.s[max(0, m.start() - 40):m.start()]
            if _PLEURAL_BEFORE.search(window) and not _PERICARDIAL.search(window):
                continue
            present = not self.negated(m.start())
            grade = _grade(self.s, _span_of(self.chunks, m.start()), m.start(), _EFFUSION_GRADE) if present else None
            out.append(_Statement("pericardial_effusion", present, grade))
        return out

    def diagnosis(self) -> str | None:
        stated = sorted((m.start(), name) for name, m in self.diagnoses if not self.negated(m.start()))
        return stated[0][1] if stated else None


# --- public API -----------------------------------------------------------------------------------
def extract_findings(text: str) -> dict[str, FindingMention]:
    """The findings an impression mentions, present or ruled out, keyed by finding name (see module doc)."""
    if not isinstance(text, str):
        raise TypeError(f"extract_findings expects a string, got {type(text).__name__}")
    mentions: dict[str, FindingMention] = {}
    for sentence in split_sentences(text):
        for st in _Sentence(sentence).statements():
            known = mentions.get(st.finding)
            if known is None or (st.present and not known.present) or (st.present and known.grade is None and st.grade):
                mentions[st.finding] = FindingMention(st.finding, st.present, st.grade, sentence)
    return mentions


def findings_present(text: str) -> dict[str, bool]:
    """Every finding of the vocabulary: True where the impression states it, False otherwise."""
    mentions = extract_findings(text)
    return {name: name in mentions and mentions[name].present for name in FINDINGS}


def extract_diagnosis(text: str) -> str | None:
    """The first diagnosis (one of `DIAGNOSES`) the impression states without negating it, else None."""
    if not isinstance(text, str):
        raise TypeError(f"extract_diagnosis expects a string, got {type(text).__name__}")
    for sentence in split_sentences(text):
        diagnosis = _Sentence(sentence).diagnosis()
        if diagnosis:
            return diagnosis
    return None


__all__ = ["DIAGNOSES", "FINDINGS", "FindingMention", "extract_diagnosis", "extract_findings", "findings_present",
           "split_sentences"]
