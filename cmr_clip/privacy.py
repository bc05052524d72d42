"""The privacy layer: what counts as a patient identifier, safe names for files, report de-identification,
and the guard every writer calls before anything leaves the machine.

    from cmr_clip.privacy import deidentify, StudyIdentity, check_no_phi, scan_folder, file_label

- **Safe names.** A file is named by its place in the study (`file_label`, `frame_label`: series number,
  instance number, frame, or its index in the listing), never by a path component: PACS exports name
  folders and files after patients (`<FAMILY>^<GIVEN>.MR.CARDIAC.0005.0001.IMA`, `<FAMILY>^<GIVEN>_<BIRTH DATE>/`).
- **Report de-identification** (`deidentify`). Two layers: the study's own identity read from its DICOM
  headers (`StudyIdentity`: name parts, patient and accession ids, birth date, institution and physician
  names), matched in any case and in the common formats of names, ids and dates; and generic detectors
  for identifiers of any format (names after titles and in "Dr X" / "Referring: X" lines, DICOM person
  names, dates, phone and fax numbers, e-mail addresses, URLs, paths, ages over 89, MRN- and
  accession-like codes, street addresses and postcodes). Each hit becomes a typed placeholder
  (`[NAME]`, `[DATE]`, `[ID]`, `[PHONE]`, `[EMAIL]`, `[URL]`, `[PATH]`, `[AGE]`, `[ADDRESS]`). Clinical
  content ("LVEF 35%", "T1 1050 ms", "3 T", "T2*", "NYHA II", "V4", "S1", "Mobitz II") is left alone:
  the detectors need a title, a label, a separator pattern or a digit count that measurements never have.
- **The guard** (`check_no_phi`, `scan_folder`, `check_dataset`, `check_vocabulary`): refuses, with
  `PHIError` naming the file and field, content that looks like it carries an identifier: fields named
  like patient identifiers or DICOM instance UIDs with a value, and any value the detectors above find.
  Tokenizer vocabularies are checked against the identities `prepare` saw (as salted hashes, never the
  values: `identity_hashes`), since subword pieces would trip the generic detectors. A field, column or
  file whose own name is the problem is named by its place (key 3, column 2, file 5), never by the name.
- **Guarded writers** (`write_json`, `write_jsonl`, `write_text`, `save_dataset`): every route that writes
  something people read or share (a saved model's metrics, a prepared corpus and its reports, a study index,
  predictions, evaluation results, a converted release, what `push` stages) writes through these, so the
  guard runs before anything reaches the disk and a refusal writes nothing. Upstream of them, reports are
  scrubbed (`deidentify`) and study folder names replaced (`safe_study_name`); the writers refuse what is left.
  On this machine's disk a bare code ("SYN00042", "40012345") is the user's own key for a study and passes;
  what leaves it (`push`) is also refused for bare codes, and a pushed corpus drops its study ids.

This module sits at the bottom of the package: it imports nothing from the rest of cmr_clip (the
processing modules import it, and it is copied with them as Hub remote code), and only the standard
library, so that the copy works wherever transformers does.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------
# Safe names


def file_label(index: int) -> str:
    """A file named by its 1-based place in the study's listing (sorted paths), never by the path itself."""
    return f"file {index + 1}"


def frame_label(series_number: int | None, instance_number: int | None, frame_index: int | None,
                file_index: int) -> str:
    """A frame named by series number, instance number and frame; the listing place when a number is missing."""
    parts = [f"series {series_number}" if series_number is not None else file_label(file_index)]
    if instance_number is not None:
        parts.append(f"instance {instance_number}")
    elif series_number is not None:
        parts.append(file_label(file_index))
    if frame_index is not None:
        parts.append(f"frame {frame_index}")
    return ", ".join(parts)


def safe_study_name(name: str, position: int, identity: StudyIdentity | None = None) -> str:
    """A study's folder or archive name (the user's key for it) unless it holds the patient's `identity` or
    anything the detectors take for a name, date, contact, path, age or address; then `study N`, by its
    1-based place in the list it came in. Bare codes are kept: a study key is one, and an accession number
    used as a folder name is caught through `identity`."""
    name = str(name).removesuffix(".zip")
    return f"study {position + 1}" if names_someone(name, identity) else name


def names_someone(name: str, identity: StudyIdentity | None = None) -> bool:
    """Whether a folder, file or study name holds `identity` or a name, date, contact, path, age or address."""
    return bool(find_identifiers(name.replace("_", " "), codes=False) or (identity and identity_spans(name, identity)))


def without_path(text: str, path, *relative_names) -> str:
    """`text` without the file's full `path` and without the folders, names and stems of its `relative_names`
    (its name inside the study or archive, where exports put patient names), each as a whole word."""
    components = {str(path)} if path else set()
    for name in relative_names:
        if name:
            parts = Path(str(name)).parts
            components.update(p for p in parts if len(p) > 1)
            components.update(Path(p).stem for p in parts if len(Path(p).stem) > 2)
    for component in sorted(components, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(component)}(?!\w)", "<path>", text)
    return text


# ---------------------------------------------------------------------------------------------------------
# A study's own identity

# DICOM keywords of the identity a study carries, read by the header pass only to scrub and to check.
PERSON_NAME_KEYWORDS = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                        "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
                        "OperatorsName", "RequestingPhysician", "PhysiciansOfRecord")
ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "RequestedProcedureID",
               "AdmissionID", "IssuerOfPatientID")
DATE_KEYWORDS = ("PatientBirthDate",)
PLACE_KEYWORDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "PatientAddress",
                  "StationName")
PHONE_KEYWORDS = ("PatientTelephoneNumbers",)
IDENTITY_KEYWORDS = PERSON_NAME_KEYWORDS + ID_KEYWORDS + DATE_KEYWORDS + PLACE_KEYWORDS + PHONE_KEYWORDS


@dataclass
class StudyIdentity:
    """Who a study is about, as its headers say: used to scrub its report and never printed.

    `names`: person names as DICOM writes them (`FAMILY^GIVEN^MIDDLE`); `ids`, `dates` (YYYYMMDD), `places`,
    `phones`: the raw values. The repr shows only counts."""

    names: set = field(default_factory=set)
    ids: set = field(default_factory=set)
    dates: set = field(default_factory=set)
    places: set = field(default_factory=set)
    phones: set = field(default_factory=set)

    def __repr__(self) -> str:
        return (f"StudyIdentity(<{len(self.names)} names, {len(self.ids)} ids, {len(self.dates)} dates, "
                f"{len(self.places)} places: not shown>)")

    __str__ = __repr__

    def add_header(self, header) -> None:
        """Collect the identity fields of one DICOM header (a pydicom Dataset or any mapping of keywords)."""
        for keyword in IDENTITY_KEYWORDS:
            for value in _header_values(header, keyword):
                target = (self.names if keyword in PERSON_NAME_KEYWORDS else self.ids if keyword in ID_KEYWORDS
                          else self.dates if keyword in DATE_KEYWORDS else self.phones if keyword in PHONE_KEYWORDS
                          else self.places)
                target.add(value)

    def __bool__(self) -> bool:
        return any((self.names, self.ids, self.dates, self.places, self.phones))

    def name_parts(self) -> set[str]:
        """Every part of every person name (family, given, middle; hyphenated parts also one by one)."""
        parts = set()
        for name in self.names:
            for part in re.split(r"[\^=,]", name):
                part = part.strip()
                if len(part) >= 2:
                    parts.add(part)
                    parts.update(p for p in re.split(r"[\s\-]+", part) if len(p) >= 2)
        return parts

    def tokens(self) -> set[str]:
        """The lower-case word tokens a tokenizer could learn from this identity (for `identity_hashes`)."""
        words = {w.lower() for part in self.name_parts() for w in re.split(r"[^\w]+", part) if len(w) >= 3}
        words |= {_alnum(value).lower() for value in self.ids if len(_alnum(value)) >= 4}
        return words


def _header_values(header, keyword: str) -> list[str]:
    try:
        value = header.get(keyword)
    except Exception:  # a malformed element reads as missing
        return []
    if value is None:
        return []
    value = getattr(value, "value", value)
    values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [str(v).strip() for v in values if str(v).strip()]


def _alnum(text: str) -> str:
    return re.sub(r"[\W_]+", "", text)


# ---------------------------------------------------------------------------------------------------------
# Detectors: one place for what an identifier looks like

_LETTER = r"[^\W\d_]"
_NAME_WORD = rf"{_LETTER}[\w'’\-]*"
_CAP_NAME_WORD = rf"(?:[A-ZÀ-ÖØ-Þ]|[^\W\d_a-zß-öø-ÿ]){_NAME_WORD[len(_LETTER):]}"
_INITIALS = r"(?:[A-Z]\.\s*){0,2}"
# "Given Family", "G. Family", "FAMILY, GIVEN", "Family, Given G."
_NAME_RUN = rf"{_INITIALS}{_CAP_NAME_WORD}(?:,?\s+{_INITIALS}{_CAP_NAME_WORD}){{0,3}}(?:\s+[A-Z]\.(?!\w))?"
_MONTHS = ("jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
           "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?")
_TITLES = r"(?:Dr|Drs|Doctor|Mr|Mrs|Ms|Mx|Miss|Prof|Professor|Sr|Sister|Nurse|Rev)"
_NAME_LABELS = (r"(?:referring(?:\s+(?:physician|doctor|clinician|consultant))?|referred\s+by|requested\s+by|"
                r"reported\s+by|read\s+by|dictated\s+by|signed(?:\s+by)?|electronically\s+signed\s+by|verified\s+by|"
                r"attending|consultant|physician|cardiologist|radiologist|technologist|sonographer|fellow|"
                r"resident|cc|patient(?:\s+name)?|pt(?:\s+name)?|first\s+name|given\s+name|"
                r"next\s+of\s+kin|contact|guardian|informant)")
# A bare "name:" label only as reports write it (capitalised): lower-case `name:` is a key of YAML and configs.
_BARE_NAME_LABELS = r"(?:Name|NAME|Surname|SURNAME|Family\s+name|Full\s+name)"
_ID_LABELS = (r"(?:mrn|mr\s*#|mr\s+no\.?|medical\s+record(?:\s+(?:no\.?|number))?|record\s+(?:no\.?|number)|"
              r"hospital\s+(?:no\.?|number)|nhs\s+(?:no\.?|number)|acc(?:ession)?(?:\s+(?:no\.?|number|#))?|"
              r"patient\s+id|pt\s+id|study\s+id|case\s+(?:no\.?|number|#)|exam\s+(?:no\.?|number|#)|"
              r"order\s+(?:no\.?|number|#)|encounter(?:\s+(?:no\.?|number|#))?|visit\s+(?:no\.?|number|#)|"
              r"ssn|social\s+security(?:\s+(?:no\.?|number))?|insurance\s+(?:no\.?|number|id)|id(?:\s+(?:no\.?|number))?)")
_STREET_TYPES = (r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
                 r"close|crescent|highway|hwy|parkway|pkwy|square|sq|strasse|straße|str|allee|weg|gasse|platz)")
_UNITS = (r"(?:ms|msec|s|sec|mm|cm|m|ml|mL|l|L|kg|g|mg|mcg|mmol|umol|µmol|bpm|t|T|hz|Hz|khz|kHz|mmhg|mmHg|"
          r"cm2|m2|mm2|ml/m2|g/m2|%|y|yr|yrs|h|hr|hrs|min|mo|d|wk|mT)")

# (placeholder, compiled pattern, the group to replace or 0 for the whole match). Order matters: the more
# specific patterns (e-mail before URL, dates before ids) come first.
DETECTORS: list[tuple[str, re.Pattern, int]] = [
    ("EMAIL", re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), 0),
    ("URL", re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+|\b[\w\-]+(?:\.[\w\-]+)*\.(?:com|org|net|edu|gov|nhs\.uk|"
                       r"co\.uk|de|fr|io|info)(?![\w\-])(?:/[^\s<>\"']*)?", re.IGNORECASE), 0),
    ("PATH", re.compile(r"(?:\b[A-Za-z]:[\\/]|\\\\[\w.$-]+\\|(?<![\w.])~?/(?=[\w.^'’ -]*[/\\]))[^\s,;:\"<>|]*"
                        r"(?:[ ][^\s,;:\"<>|/\\]+[/\\][^\s,;:\"<>|]*)*"), 0),
    ("NAME", re.compile(rf"\b{_NAME_WORD}\^{_NAME_WORD}(?:\^[\w'’\-]*)*"), 0),
    ("PHONE", re.compile(r"(?:\b(?:tel|telephone|phone|ph|fax|pager|bleep|mobile|cell|mob|ext|extension|call|callback|contact)\.?\s*"
                         r"(?:no\.?|number|#)?\s*[:.#]?\s*)\+?\(?\d[\d\s().\-/]{2,}\d", re.IGNORECASE), 0),
    ("PHONE", re.compile(r"(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,5}\)\s?|\b\d{3}[\s.\-])\d{3}[\s.\-]\d{4}\b"), 0),
    ("PHONE", re.compile(r"\+\d{1,3}(?:[\s.\-]?\(?\d{1,5}\)?){2,5}\d\b"), 0),
    ("PHONE", re.compile(r"(?:\(0\)\s?|\b0)\d{2,4}[\s\-]\d{3,4}[\s\-]?\d{3,4}\b"), 0),
    ("PHONE", re.compile(r"\b\d{3}[\-.]\d{4}\s*(?:ext\.?|x)\s*\d+", re.IGNORECASE), 0),
    ("DATE", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?[\s\-]*(?:of\s+)?(?:{_MONTHS})\.?,?[\s\-]*(?:\d{{4}}|'?\d{{2}})\b"
                        rf"|\b(?:{_MONTHS})\.?[\s\-]+\d{{1,2}}(?:st|nd|rd|th)?,?[\s\-]+(?:\d{{4}}|'\d{{2}})\b"
                        rf"|\b(?:{_MONTHS})\.?,?[\s\-]+\d{{4}}\b"
                        rf"|\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)\b", re.IGNORECASE), 0),
    ("DATE", re.compile(r"\b\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}\b|\b\d{1,2}[\-/.]\d{1,2}[\-/.](?:\d{4}|\d{2})\b"
                        r"|\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"), 0),
    ("DATE", re.compile(r"\b(?:dob|d\.o\.b\.?|date\s+of\s+birth|born(?:\s+on)?|birth\s*date)\s*[:#]?\s*\S+", re.IGNORECASE), 0),
    ("AGE", re.compile(r"\b(?:9\d|1[0-4]\d)(?=\s*-?\s*(?:years?|yrs?|y)[\s\-]*(?:old|of\s+age|o\b)|\s*(?:yo|y/o|y\.o\.?)\b)",
                       re.IGNORECASE), 0),
    ("AGE", re.compile(r"\b(?:age|aged)\s*[:=]?\s*(9\d|1[0-4]\d)\b", re.IGNORECASE), 1),
    ("AGE", re.compile(r"\b(?:nonagenarian|centenarian)\b", re.IGNORECASE), 0),
    ("ADDRESS", re.compile(rf"\b\d{{1,5}}[A-Za-z]?\s+(?:{_CAP_NAME_WORD}\s+){{1,4}}{_STREET_TYPES}\b\.?"
                           rf"(?:,?\s+(?:apt|apartment|suite|unit|flat)\.?\s*#?\w+)?", re.IGNORECASE), 0),
    ("ADDRESS", re.compile(rf"\b{_CAP_NAME_WORD}(?:strasse|straße|str\.|weg|gasse|platz|allee)\s+\d{{1,4}}[a-z]?\b"), 0),
    ("ADDRESS", re.compile(r"\b(?:P\.?\s?O\.?\s+Box|Postfach)\s+\d+\b", re.IGNORECASE), 0),
    ("ADDRESS", re.compile(rf"\b\d{{1,5}},?\s+(?:rue|avenue|av\.|boulevard|bd|place|chemin|via|viale|calle|avenida|rua|plaza)"
                           rf"\s+(?:(?:de|du|des|la|le|del|della|di|da|do|dos)\s+)*{_CAP_NAME_WORD}(?:\s+{_CAP_NAME_WORD})?",
                           re.IGNORECASE), 0),
    ("ADDRESS", re.compile(rf"\b(?:{_CAP_NAME_WORD}\s+){{0,2}}{_CAP_NAME_WORD},\s*[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?\b"
                           rf"|\b(?:{_CAP_NAME_WORD}\s+)?[A-Z]{{1,2}}\d[A-Z\d]?\s+\d[A-Z]{{2}}\b"), 0),
    ("ADDRESS", re.compile(r"\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b|\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b|\b(?:D-)?\d{5}\s+"
                           rf"(?=(?:{_CAP_NAME_WORD})\b)(?!(?:ms|mm|Hz|patients?|studies|cases)\b){_CAP_NAME_WORD}"), 0),
    ("ID", re.compile(rf"\b{_ID_LABELS}\s*[:#.]?\s*(?:is\s+)?(?=[\w\-/]*\d)[\w\-/]{{3,}}", re.IGNORECASE), 0),
    ("ID", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), 0),
    ("ID", re.compile(rf"\b{_ID_LABELS}\s*[:#.]?\s*\d[\d\s\-]{{5,}}\d\b", re.IGNORECASE), 0),
    ("NAME", re.compile(rf"\b{_TITLES}\.?\s+{_NAME_RUN}(?:\s*,\s*(?:MD|PhD|DO|MBBS|FRCR|FRCP|RN|MRCP)\b\.?)*"), 0),
    ("NAME", re.compile(rf"(?<!\w)(?:(?i:{_NAME_LABELS})|{_BARE_NAME_LABELS})\s*:\s*(?:{_TITLES}\.?\s+)?{_NAME_RUN}"), 0),
    ("NAME", re.compile(rf"\b(?i:reported|read|dictated|signed|verified|requested|referred|reviewed|discussed|communicated|"
                        rf"seen|examined|supervised|performed|copied)\s+(?i:by|with|to)\s+{_NAME_RUN}"), 0),
    ("NAME", re.compile(rf"\b(?:{_CAP_NAME_WORD}\s+){{1,2}}{_CAP_NAME_WORD},\s*(?:MD|M\.D\.|PhD|DO|MBBS|FRCR|FRCP|RN|NP|PA)\b\.?"), 0),
    ("NAME", re.compile(r"\b[A-Z]{2,}(?:['’\-][A-Z]+)*,\s*[A-Z]{2,}(?:['’\-][A-Z]+)*\b(?=\s*(?:\(|$|\s(?:was|is|has|DOB|MRN)))"), 0),
]

# Codes with letters and digits: ids whatever the format (letters, digits and dashes in any order and grouping),
# unless the token is a number with its unit ("1050ms") or a short clinical code ("T2", "V4", "NYHA II").
# How outputs name a study: a short hash of its StudyInstanceUID. It tells studies apart and finds the same study
# again across runs, without the UID (which leads back to the PACS record); the guard knows this form.
STUDY_KEY_PREFIX = "study-"
STUDY_KEY_HEX = 10
_STUDY_KEY = re.compile(rf"{STUDY_KEY_PREFIX}[0-9a-f]{{{STUDY_KEY_HEX}}}")


def study_key(study_instance_uid: str) -> str:
    """`study-` and the first hex digits of the UID's SHA-256 ("no-uid" for a study without a usable UID)."""
    if not study_instance_uid:
        return "no-uid"
    return STUDY_KEY_PREFIX + hashlib.sha256(study_instance_uid.encode()).hexdigest()[:STUDY_KEY_HEX]


_CODE = re.compile(r"(?<![\w.])(?=[\w\-/#]*\d)[A-Za-z0-9][\w\-/#]*[A-Za-z0-9](?![\w])")
_NUMBER_WITH_UNIT = re.compile(rf"^\d+(?:[.,]\d+)?(?:{_UNITS})(?:/{_UNITS})*$")


def _looks_like_code(token: str) -> bool:
    if _STUDY_KEY.fullmatch(token):
        return False  # our own pseudonymous study key (`study_key`)
    digits = sum(c.isdigit() for c in token)
    letters = sum(c.isalpha() for c in token)
    if _NUMBER_WITH_UNIT.match(token):
        return False
    if letters == 0:
        # pure numbers: long runs are record numbers; ranges and ratios ("120/80", "10-12") are measurements
        return max(len(run) for run in re.findall(r"\d+", token)) >= 6
    if re.fullmatch(r"[0-9a-f]{32,}", token):
        return False  # a digest (a model fingerprint, a commit): it names data, not a patient
    if digits < 6 and re.search(r"[a-z]{5,}", token):
        return False  # a word with a number in it ("nakashima2026cmrclip", "covid2019"), not a record number
    switches = sum(1 for a, b in zip(token, token[1:]) if a.isalpha() != b.isalpha() and a.isalnum() and b.isalnum())
    return digits >= 4 or (digits >= 3 and switches >= 4)


def find_identifiers(text: str, codes: bool = True) -> list[tuple[int, int, str]]:
    """Spans `(start, end, kind)` of everything in `text` the generic detectors take for an identifier.
    `codes=False` leaves out bare letter-and-digit codes (a study's own key, "SYN00042", is one)."""
    spans = []
    for kind, pattern, group in DETECTORS:
        spans += [(m.start(group), m.end(group), kind) for m in pattern.finditer(text) if m.end(group) > m.start(group)]
    if codes:
        spans += [(m.start(), m.end(), "ID") for m in _CODE.finditer(text) if _looks_like_code(m.group(0))]
    return _merge(spans)


def _merge(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping spans joined; the kind of the earliest-starting (then longest) span wins."""
    merged: list[list] = []
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1])):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, kind])
    return [tuple(span) for span in merged]


# ---------------------------------------------------------------------------------------------------------
# The study's own identity, in the formats reports write it in


def _flexible(text: str) -> str:
    """A pattern for `text` whatever the case and the separators between its letters and digits."""
    chunks = [re.escape(c) for c in _alnum(text)]
    return r"[\W_]{0,2}".join(chunks)


def _name_part_pattern(part: str) -> str:
    pieces = [p for p in re.split(r"[\s'’\-]+", part) if p]
    return r"[\s'’\-]?".join(re.escape(p) for p in pieces)


def date_variants(value: str) -> list[str]:
    """A DICOM date (YYYYMMDD) as reports write it: ISO, US and European numeric forms, month names."""
    digits = re.sub(r"\D", "", value)
    if len(digits) != 8:
        return []
    year, month, day = digits[:4], digits[4:6], digits[6:]
    m, d = str(int(month)), str(int(day))
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
        return [digits]
    names = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December"][int(month) - 1]
    variants = {digits, f"{year}-{month}-{day}", f"{year}/{month}/{day}", f"{year}.{month}.{day}"}
    for mm, dd in ((month, day), (m, d)):
        for sep in "/-.":
            for yy in (year, year[2:]):
                variants |= {f"{mm}{sep}{dd}{sep}{yy}", f"{dd}{sep}{mm}{sep}{yy}"}
    for month_name in (names, names[:3], names[:3] + "."):
        for dd in (d, day, d + _ordinal(int(d))):
            variants |= {f"{month_name} {dd}, {year}", f"{month_name} {dd} {year}", f"{dd} {month_name} {year}",
                         f"{dd} {month_name}, {year}", f"{dd}-{month_name}-{year}", f"{dd} of {month_name} {year}"}
    return sorted(variants, key=len, reverse=True)


def _ordinal(day: int) -> str:
    return "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def identity_spans(text: str, identity: StudyIdentity) -> list[tuple[int, int, str]]:
    """Where the study's own identity appears in `text`, in any case and the usual formats.

    Two-letter name parts ("Li", "Al") are matched only as written in title case: in capitals they are
    clinical abbreviations ("AL" amyloidosis, "LA"). Ids shorter than 5 characters are left to the detectors:
    a short StudyID would match measurements."""
    patterns: list[tuple[str, str, int]] = []
    for part in sorted(identity.name_parts(), key=len, reverse=True):
        if len(part) >= 3:
            patterns.append(("NAME", rf"(?<!\w){_name_part_pattern(part)}(?!\w)", re.IGNORECASE))
        else:
            patterns.append(("NAME", rf"(?<!\w){re.escape(part.title())}(?!\w)", 0))
    for value in identity.ids | identity.phones:
        if len(_alnum(value)) >= 5:
            kind = "PHONE" if value in identity.phones else "ID"
            patterns.append((kind, rf"(?<![^\W_]){_flexible(value)}(?![^\W_])", re.IGNORECASE))
    for value in identity.dates:
        patterns += [("DATE", rf"(?<!\w){re.escape(variant)}(?!\w)", re.IGNORECASE) for variant in date_variants(value)]
    for value in identity.places:
        pieces = r"[\s,]+".join(re.escape(p) for p in re.split(r"[\s^,]+", value) if p)
        if pieces and len(_alnum(value)) >= 4:
            kind = "ADDRESS" if any(c.isdigit() for c in value) else "NAME"
            patterns.append((kind, rf"(?<!\w){pieces}(?!\w)", re.IGNORECASE))
    return [(m.start(), m.end(), kind) for kind, pattern, flags in patterns for m in re.finditer(pattern, text, flags)]


def deidentify(text: str, identity: StudyIdentity | None = None) -> str:
    """`text` with the study's own identity and every identifier the detectors find replaced by typed
    placeholders (`[NAME]`, `[DATE]`, `[ID]`, `[PHONE]`, `[EMAIL]`, `[URL]`, `[PATH]`, `[AGE]`, `[ADDRESS]`)."""
    if not text:
        return text
    spans = find_identifiers(text)
    if identity:
        spans = _merge(spans + identity_spans(text, identity))
    out, last = [], 0
    for start, end, kind in spans:
        out += [text[last:start], f"[{kind}]"]
        last = end
    out.append(text[last:])
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------
# Salted hashes of identity tokens: what a tokenizer must not have learned, kept without the values

IDENTITY_HASHES_FILE = "identity_hashes.json"


def new_salt() -> str:
    return secrets.token_hex(16)


def shared_salt(source: bytes) -> str:
    """A salt every job that reads the same `source` (the reports file of a sharded prepare) draws alike. Like any
    salt here it is stored beside its hashes; it only has to differ between corpora, which this one does."""
    return hashlib.sha256(b"cmr-clip identity salt\0" + source).hexdigest()[:32]


def hash_token(token: str, salt: str) -> str:
    return hashlib.sha256((salt + token.lower()).encode("utf-8")).hexdigest()


def identity_hashes(identity: StudyIdentity, salt: str) -> set[str]:
    """Salted hashes of the identity's word tokens (names, ids): enough to check a vocabulary, not to read one."""
    return {hash_token(token, salt) for token in identity.tokens()}


def save_identity_hashes(folder: str | Path, salt: str, hashes: set[str]) -> None:
    (Path(folder) / IDENTITY_HASHES_FILE).write_text(json.dumps({"salt": salt, "hashes": sorted(hashes)}))


def load_identity_hashes(folder: str | Path) -> tuple[str, set[str]] | None:
    """`(salt, hashes)` saved by `prepare` in `folder`, or None."""
    path = Path(folder) / IDENTITY_HASHES_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["salt"], set(data["hashes"])


# ---------------------------------------------------------------------------------------------------------
# The guard


class PHIError(ValueError):
    """Something about to be written or uploaded looks like it carries a patient identifier; `where` and
    `field` say what (never the value)."""

    def __init__(self, where: str, field: str, reason: str):
        self.where, self.field, self.reason = where, field, reason
        super().__init__(f"refusing to write or upload {where}: {field}: {reason}. Nothing was written or uploaded; "
                         "remove or de-identify it (rename a study folder or file named after a patient), then run again.")


def _normalise_key(key) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


# Field names of patient identifiers (DICOM keywords and the names datasets and exports use), normalised.
IDENTIFIER_KEYS = {
    "patientid", "patientsid", "patient", "patientname", "patientsname", "patientbirthdate", "patientsbirthdate",
    "birthdate", "dateofbirth", "dob", "accessionnumber", "accession", "mrn", "medicalrecordnumber",
    "otherpatientids", "otherpatientidssequence", "otherpatientnames", "issuerofpatientid", "patientaddress",
    "patientsaddress", "patienttelephonenumbers", "patientstelephonenumbers", "patientmothersbirthname",
    "patientsmothersbirthname", "subjectid", "ssn", "socialsecuritynumber", "referringphysicianname",
    "institutionname", "institutionaddress", "performingphysicianname", "operatorsname",
    "nameofphysiciansreadingstudy",
}
# DICOM instance UIDs are not identifiers by themselves but lead back to the patient's record in the PACS.
LINKING_UID_KEYS = {"studyinstanceuid", "seriesinstanceuid", "sopinstanceuid", "mediastoragesopinstanceuid"}
UID_PATTERN = re.compile(r"\b[0-2](?:\.(?:0|[1-9]\d*)){2,}\b")
DICOM_STANDARD_UID_ROOT = "1.2.840.10008."  # transfer syntaxes, SOP classes: the standard's own, not a patient's
IDENTIFIER_LIKE_VALUE = re.compile(r"^\D{0,4}\d{6,}$")
REASONS = {
    "NAME": "looks like a person's name", "DATE": "looks like a date",
    "ID": "looks like a medical record or accession number", "PHONE": "looks like a phone or fax number",
    "EMAIL": "looks like an e-mail address", "URL": "looks like a web address",
    "PATH": "is a path with a folder or file named after someone (a name, date or record number)",
    "AGE": "looks like an age over 89", "ADDRESS": "looks like a street address or postcode",
}


def _path_names_someone(path: str, codes: bool = True) -> bool:
    """Whether a folder or file name in `path` holds an identifier: a report drops every path, but the guard
    lets through the paths tools write (a model's folder in an index manifest) when no part of them names one.
    `codes=False`: bare codes in names pass (a checkpoint's `step-00000004`, on this machine's disk)."""
    return any(find_identifiers(part.replace("_", " "), codes) for part in re.split(r"[/\\]+", path) if part)


def _reason(kind: str, found: str) -> str:
    lowered = found.lower()
    if kind == "NAME" and "^" in found:
        return "looks like a DICOM person name (FAMILY^GIVEN)"
    if kind == "ID" and re.match(r"(?:mrn|mr\b|medical)", lowered):
        return "looks like a medical record number"
    if kind == "ID" and lowered.startswith("acc"):
        return "looks like an accession number"
    if kind == "DATE" and re.search(r"dob|d\.o\.b|birth|born", lowered):
        return "looks like a date of birth"
    return REASONS[kind]


def text_problem(text: str, codes: bool = True, local: bool = False) -> str | None:
    """Why `text` looks like it carries an identifier, or None. `codes=False`: bare codes pass (see
    `find_identifiers`), for fields that hold a study's own key; `local`: in paths too (see `check_json`)."""
    for start, end, kind in find_identifiers(text, codes=codes):
        if kind == "PATH" and not _path_names_someone(text[start:end], codes=not local):
            continue
        return _reason(kind, text[start:end])
    for match in UID_PATTERN.finditer(text):
        uid = match.group(0)
        if len(uid) >= 14 and not uid.startswith(DICOM_STANDARD_UID_ROOT):
            return "looks like a DICOM instance UID (it links back to the patient's record)"
    return None


def _key_problem(key, value) -> str | None:
    name = _normalise_key(key)
    if value is None or (isinstance(value, (str, list, tuple, dict)) and not value):
        return None  # an empty field (numbers, numpy's included, are never empty)
    if name in IDENTIFIER_KEYS:
        return "is a patient identifier field with a value"
    if name in LINKING_UID_KEYS:
        return "is a DICOM instance UID field with a value (it links back to the patient's record)"
    return None


def _identifier_named(key) -> bool:
    name = _normalise_key(key)
    return name.endswith(("id", "ids")) or any(part in name for part in ("accession", "mrn", "patient", "subject"))


def check_no_phi(obj, where: str, field: str = "") -> None:
    """Raise `PHIError` naming `where` and the field if `obj` looks like it carries a patient identifier.

    `obj`: a model card (`huggingface_hub.ModelCard` or its text), a JSON-like value (a config, a manifest;
    fields are named by their path, e.g. `vision_config.notes[2]`), or a `datasets` Dataset / DatasetDict
    (column names and string values)."""
    if _is_dataset(obj):
        check_dataset(obj, where)
    elif hasattr(obj, "content") and hasattr(obj, "data"):  # a ModelCard
        check_text(str(obj.content), where)
    elif isinstance(obj, str) and not field:
        check_text(obj, where)
    else:
        check_json(obj, where, field)


def check_text(text: str, where: str, local: bool = False) -> None:
    """The guard over free text, line by line; `local` as in `check_json`."""
    for number, line in enumerate(text.splitlines(), start=1):
        reason = text_problem(line, codes=not local, local=local)
        if reason:
            raise PHIError(where, f"line {number}", reason)


def check_json(obj, where: str, field: str = "", identifier_field: bool = False, local: bool = False) -> None:
    """The guard over a JSON-like value: field names and string values at any depth. `local`: a write to this
    machine's disk, where a bare code ("S000123", "40012345", a study folder's name) is the user's own key for a
    study; bare codes are refused only on their way out (`push`, which also drops a corpus's study ids).
    Everything the detectors find (names, labelled record numbers, dates, contacts, ...) is refused alike."""
    if isinstance(obj, dict):
        for number, (key, value) in enumerate(obj.items(), start=1):
            path = f"{field}.{key}" if field else str(key)
            if reason := text_problem(str(key), codes=not local, local=local):  # the key names someone: shown by its place
                raise PHIError(where, f"{field or 'top level'}, key {number}", reason)
            if reason := _key_problem(key, value):
                raise PHIError(where, path, reason)
            check_json(value, where, path, identifier_field or _identifier_named(key), local)
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            check_json(value, where, f"{field}[{index}]", identifier_field, local)
    elif isinstance(obj, str):
        reason = text_problem(obj, codes=not (identifier_field or local), local=local)
        if reason is None and identifier_field and not local and IDENTIFIER_LIKE_VALUE.match(obj.strip()):
            reason = "is an identifier field holding a number like a hospital ID"
        if reason:
            raise PHIError(where, field or "value", reason)


def _is_dataset(obj) -> bool:
    return type(obj).__module__.startswith("datasets") and type(obj).__name__ in ("Dataset", "DatasetDict")


def check_dataset(dataset, where: str = "dataset", local: bool = False) -> None:
    """Column names and string values of a Dataset / DatasetDict (JSON-text columns are read as JSON); `local`
    as in `check_json`."""
    if type(dataset).__name__ == "DatasetDict":
        for split in dataset:
            check_dataset(dataset[split], f"{where}[{split}]", local)
        return
    for number, column in enumerate(dataset.column_names, start=1):
        if reason := text_problem(column, codes=not local, local=local):
            raise PHIError(where, f"column {number}", f"its name {reason}")
        values = dataset[column] if _is_text_column(dataset.features[column]) else None
        if _normalise_key(column) in IDENTIFIER_KEYS | LINKING_UID_KEYS:
            if values is None or any(v not in (None, "") for v in values):
                raise PHIError(where, f"column {column!r}", "is a patient identifier column with values")
        for row, value in enumerate(values or []):
            check_json(_maybe_json(value), where, f"column {column!r} row {row}", _identifier_named(column), local)


def _is_text_column(feature) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


def _maybe_json(value):
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def vocabulary_tokens(folder: str | Path) -> list[str]:
    """The entries of the tokenizer vocabularies in `folder` (tokenizer.json, vocab.txt, vocab.json), bare:
    without WordPiece's `##` or byte-level BPE's `Ġ`."""
    folder, tokens = Path(folder), []
    if (folder / "tokenizer.json").is_file():
        vocab = json.loads((folder / "tokenizer.json").read_text()).get("model", {}).get("vocab", {})
        tokens += list(vocab) if isinstance(vocab, dict) else [entry[0] for entry in vocab]
    if (folder / "vocab.txt").is_file():
        tokens += (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if (folder / "vocab.json").is_file():
        tokens += list(json.loads((folder / "vocab.json").read_text()))
    return [token.removeprefix("##").removeprefix("Ġ").strip() for token in tokens]


def check_vocabulary(folder: str | Path, salt: str, hashes: set[str], where: str = "tokenizer") -> None:
    """Refuse (`PHIError`) a vocabulary in `folder` holding a token whose salted hash is one of `hashes`."""
    for number, token in enumerate(vocabulary_tokens(folder)):
        if len(token) >= 3 and hash_token(token, salt) in hashes:
            raise PHIError(where, f"vocabulary entry {number}", "is part of a patient's identity seen by prepare")


# Files whose content is not scanned as text, and why: subword vocabularies are not records (a WordPiece piece
# would trip the patterns; they are checked against the identities prepare saw instead); Python files are the
# package's own code; weights, FAISS indexes and images are binary.
UNSCANNED_SUFFIXES = (".py", ".safetensors", ".bin", ".faiss", ".png")
UNSCANNED_FILES = ("vocab.txt", "merges.txt", "vocab.json")


def scan_folder(folder: str | Path, identities: tuple[str, set[str]] | None = None) -> list[str]:
    """Run the guard over every text file under `folder` (raises `PHIError`); returns the files scanned.
    With `identities` (`(salt, hashes)` from `load_identity_hashes`) vocabularies are checked against them."""
    folder, scanned = Path(folder), []
    for number, path in enumerate(sorted(p for p in folder.rglob("*") if p.is_file()), start=1):
        name = path.relative_to(folder).as_posix()
        if _path_names_someone(name):
            raise PHIError(f"the folder's file {number}", "its name", "names someone (a name, date, record number, ...)")
        if path.suffix in UNSCANNED_SUFFIXES or path.name in UNSCANNED_FILES:
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".json":
            data = json.loads(text)
            if path.name == "tokenizer.json" and isinstance(data, dict):
                data = {k: v for k, v in data.items() if k != "model"}  # the vocabulary, see UNSCANNED_FILES
            check_json(data, name, "")
        elif path.suffix == ".parquet":
            check_json(_parquet_columns(path), name, "")
        elif path.suffix == ".jsonl":
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    check_json(json.loads(line), name, f"line {number}")
        else:
            check_text(text, name)
        scanned.append(name)
    if identities is not None:
        for vocabulary_folder in sorted({p.parent for p in folder.rglob("*") if p.name in ("tokenizer.json", "vocab.txt", "vocab.json")}):
            check_vocabulary(vocabulary_folder, *identities, where=vocabulary_folder.relative_to(folder).as_posix() or ".")
    return scanned


def _parquet_columns(path: Path) -> dict[str, list]:
    """A Parquet file's columns as lists (a study index's manifest). pyarrow is imported here, not at the top:
    this module is copied as Hub remote code and needs only the standard library there (see the docstring)."""
    import pyarrow.parquet

    return pyarrow.parquet.read_table(path).to_pydict()


# ---------------------------------------------------------------------------------------------------------
# Guarded writers: how the package writes what people read or share (metrics, reports, manifests, corpora).
# Each runs the guard first (as a local write: see `check_json`) and writes nothing when it refuses.


def write_json(path: str | Path, data, where: str | None = None, indent: int | None = 2, sort_keys: bool = False) -> None:
    """`data` as JSON at `path`, once `check_json` has passed it (`where` names it in a refusal; default: the file)."""
    path = Path(path)
    check_json(data, where or path.name, local=True)
    path.write_text(json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def write_jsonl(path: str | Path, rows, where: str | None = None) -> None:
    """`rows` as JSON lines at `path`, once `check_json` has passed each (a refusal names the line)."""
    path, rows = Path(path), list(rows)
    for number, row in enumerate(rows, start=1):
        check_json(row, where or path.name, f"line {number}", local=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def append_jsonl(path: str | Path, row, where: str | None = None) -> None:
    """`row` as one more JSON line at the end of `path` (a journal written as work is done), once `check_json` has
    passed it; the line is written in one call, so an interrupted run leaves at most its last line cut short."""
    path = Path(path)
    check_json(row, where or path.name, local=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def write_text(path: str | Path, text: str, where: str | None = None) -> None:
    """`text` at `path` (a model card, a summary), once `check_text` has passed it line by line."""
    path = Path(path)
    check_text(text, where or path.name, local=True)
    path.write_text(text)


def save_dataset(dataset, folder: str | Path, where: str = "corpus") -> None:
    """`dataset.save_to_disk(folder)` (a `datasets` Dataset / DatasetDict), once `check_dataset` has passed it."""
    check_dataset(dataset, where, local=True)
    dataset.save_to_disk(str(folder))
