"""Prompt sets for zero-shot CMR-CLIP: finding ensembles, disease labels, value grids and decision thresholds.

A prompt set is a JSON file (the package's `prompts/default.json` is the built-in one) with
`findings` (name -> `positive` and `negative` prompt lists), `diseases` (name -> prompt list),
`estimates` (name -> `values`, `unit`, and `templates` with a `{value}` slot or one `prompts` list per
value, and optionally a `calibration` fitted on a validation split) and `thresholds`
(finding -> probability at or above which the finding is called present, with the rule and split they
were chosen on). A finding may add `requires_views`, "sequence/view" keys of which a study needs one for the
finding to be assessed (LGE findings need an LGE view), and `match`, how a study is compared with each side's
prompts: "ensemble" (the default) where they are paraphrases of one statement, compared as their mean direction
(CLIP's prompt ensembling); "any" where they state distinct patterns, any one of which makes the side true (LGE:
subendocardial, transmural, mid-wall, insertion-point, diffuse), so that the study's similarity to the side is
its highest similarity to one of them (see `scoring.py`). A set may carry `calibration`, per-finding maps from raw
to calibrated probabilities fitted on validation studies (versioned; see `calibration.py`); thresholds then
apply to the calibrated probabilities. A model directory may hold its own copy, `zero_shot_prompts.json`,
written by `PromptSet.save` after thresholds (and calibration) were fitted on a validation split; the pipeline
prefers it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import cached_file

from ..privacy import write_json
from ..vocabulary import CARDIAC_VIEWS, MODEL_SEQUENCES
from .calibration import CALIBRATION_VERSION, METHODS, PARAMETERS

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
MODEL_PROMPTS_FILE = "zero_shot_prompts.json"
MATCHES = ("ensemble", "any")


class PromptSetError(ValueError):
    """A prompt set file is missing, malformed, or lacks a name that was asked for."""


@dataclass
class PromptSet:
    findings: dict[str, dict[str, list[str]]]
    diseases: dict[str, list[str]] = field(default_factory=dict)
    estimates: dict[str, dict] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_rule: str | None = None
    calibration: dict | None = None
    name: str = "custom"
    description: str = ""

    @classmethod
    def load(cls, source: str | Path | None = None) -> PromptSet:
        """A prompt set from a JSON file, a model directory holding `zero_shot_prompts.json`, or the name of a
        built-in set (`default`); None gives the built-in default."""
        path = resolve_prompt_file(source)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise PromptSetError(f"{path}: not valid JSON ({error}). Fix the file or pass another prompt set.") from error
        return cls.from_dict(data, origin=str(path))

    @classmethod
    def from_dict(cls, data: dict, origin: str = "prompt set") -> PromptSet:
        findings = data.get("findings") or {}
        for name, ensembles in findings.items():
            if not ensembles.get("positive") or not ensembles.get("negative"):
                raise PromptSetError(f"{origin}: finding {name!r} needs non-empty 'positive' and 'negative' prompt lists.")
            check_requirements(name, ensembles.get("requires_views"), origin)
            if ensembles.get("match", "ensemble") not in MATCHES:
                raise PromptSetError(f"{origin}: finding {name!r} has match {ensembles['match']!r}; use one of {MATCHES} "
                                     "(ensemble: the prompts are paraphrases; any: each states a distinct pattern).")
        for name, spec in (data.get("estimates") or {}).items():
            check_estimate(name, spec, origin)
        thresholds = dict(data.get("thresholds") or {})
        rule = thresholds.pop("rule", None)
        thresholds.pop("split", None)
        return cls(findings=findings, diseases=data.get("diseases") or {}, estimates=data.get("estimates") or {},
                   thresholds={k: float(v) for k, v in thresholds.items()}, threshold_rule=rule,
                   calibration=check_calibration(data.get("calibration"), findings, origin), name=data.get("name", "custom"), description=data.get("description", ""))

    def to_dict(self) -> dict:
        thresholds = dict(self.thresholds)
        if self.threshold_rule:
            thresholds["rule"] = self.threshold_rule
        data = {"name": self.name, "description": self.description, "findings": self.findings,
                "diseases": self.diseases, "estimates": self.estimates, "thresholds": thresholds}
        if self.calibration:
            data["calibration"] = self.calibration
        return data

    def save(self, model_dir: str | Path) -> Path:
        """Write the set (with its thresholds) next to a model as `zero_shot_prompts.json`."""
        path = Path(model_dir) / MODEL_PROMPTS_FILE
        write_json(path, self.to_dict())
        return path

    def required_views(self, finding: str) -> list[str]:
        """The "sequence/view" keys of which a study needs one for `finding` to be assessed (none: always)."""
        return list(self.findings[finding].get("requires_views", []))

    def match(self, finding: str) -> str:
        """How a study is compared with the finding's prompts: "ensemble" or "any" (see the module docstring)."""
        return self.findings[finding].get("match", "ensemble")

    def calibration_of(self, finding: str) -> tuple[str, dict] | None:
        """(method, parameters) of the finding's calibration, or None when it has none."""
        if not self.calibration or finding not in self.calibration.get("findings", {}):
            return None
        return self.calibration["method"], self.calibration["findings"][finding]

    def finding_names(self, names: list[str] | None = None) -> list[str]:
        return self._select(names, self.findings, "finding")

    def estimate_names(self, names: list[str] | None = None) -> list[str]:
        return self._select(names, self.estimates, "estimate")

    def _select(self, names: list[str] | None, table: dict, kind: str) -> list[str]:
        if names is None:
            return list(table)
        unknown = [n for n in names if n not in table]
        if unknown:
            raise PromptSetError(f"unknown {kind}(s) {unknown}; this prompt set ({self.name}) has {sorted(table)}. "
                                 f"Add them to the prompt set file or pick from these.")
        return list(names)


def check_estimate(name: str, spec: dict, origin: str) -> None:
    """An estimate states its `values` either through `templates` with a `{value}` slot or through `prompts`,
    one non-empty list of prompts per value (words for grades, e.g. "severely impaired" for 25); its optional
    `calibration` is a linear map (`slope`, `intercept`) applied to the similarity-weighted value."""
    values, templates, prompts = spec.get("values"), spec.get("templates"), spec.get("prompts")
    by_template = bool(templates) and all("{value}" in t for t in templates)
    by_prompts = isinstance(prompts, list) and values is not None and len(prompts) == len(values) and all(prompts)
    if not values or by_template == by_prompts:
        raise PromptSetError(f"{origin}: estimate {name!r} needs 'values' and either 'templates' that contain '{{value}}' "
                             "or 'prompts': one non-empty prompt list per value.")
    calibration = spec.get("calibration")
    if calibration is not None and not all(isinstance(calibration.get(k), (int, float)) for k in ("slope", "intercept")):
        raise PromptSetError(f"{origin}: estimate {name!r} has a 'calibration' without numeric 'slope' and 'intercept'.")


def estimate_prompts(spec: dict) -> list[list[str]]:
    """One prompt list per value of an estimate (see `check_estimate`)."""
    if spec.get("prompts"):
        return [list(group) for group in spec["prompts"]]
    return [[t.format(value=v) for t in spec["templates"]] for v in spec["values"]]


def check_calibration(block: dict | None, findings: dict, origin: str) -> dict | None:
    """The `calibration` block of a prompt set, checked: a known version and method, and parameters of the right
    shape for findings the set has."""
    if not block:
        return None
    fix = "Refit it with `cmr-clip evaluate --save-thresholds` or remove the 'calibration' block."
    if block.get("version") != CALIBRATION_VERSION:
        raise PromptSetError(f"{origin}: calibration version {block.get('version')!r} is not supported (this "
                               f"package reads version {CALIBRATION_VERSION}). {fix}")
    method = block.get("method")
    if method not in METHODS:
        raise PromptSetError(f"{origin}: calibration method {method!r} is not one of {METHODS}. {fix}")
    needed = PARAMETERS[method]
    for name, parameters in (block.get("findings") or {}).items():
        if name not in findings:
            raise PromptSetError(f"{origin}: calibration for {name!r}, a finding the set does not have. {fix}")
        if not isinstance(parameters, dict) or any(key not in parameters for key in needed):
            raise PromptSetError(f"{origin}: calibration of {name!r} needs {list(needed)} for {method}. {fix}")
        if method == "isotonic" and (len(parameters["x"]) != len(parameters["y"]) or not parameters["x"]):
            raise PromptSetError(f"{origin}: isotonic calibration of {name!r} needs x and y of one length. {fix}")
        if method == "platt" and parameters["slope"] < 0:
            raise PromptSetError(f"{origin}: Platt calibration of {name!r} has a negative slope (it would reverse "
                                   f"the ranking). {fix}")
    return block


def check_requirements(name: str, views, origin: str) -> list[str]:
    """A finding's `requires_views`, checked: "sequence/view" keys of the vocabulary."""
    keys = [views] if isinstance(views, str) else list(views or [])
    known = [f"{s}/{v}" for s in MODEL_SEQUENCES for v in CARDIAC_VIEWS]
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise PromptSetError(f"{origin}: finding {name!r} requires views {unknown}, which are not sequence/view "
                               f"keys; use any of {known}.")
    return keys


def resolve_prompt_file(source: str | Path | None) -> Path:
    if source is None:
        return PROMPTS_DIR / "default.json"
    path = Path(source)
    if path.is_dir():
        path = path / MODEL_PROMPTS_FILE
    elif not path.exists() and (PROMPTS_DIR / f"{source}.json").exists():
        path = PROMPTS_DIR / f"{source}.json"
    if not path.is_file():
        builtin = sorted(p.stem for p in PROMPTS_DIR.glob("*.json"))
        raise PromptSetError(f"no prompt set at {source} (looked for {path}). Pass a JSON file, a model directory with "
                             f"{MODEL_PROMPTS_FILE}, or a built-in name: {builtin}.")
    return path


def model_prompt_set(model: str | Path | None) -> PromptSet:
    """The model's own prompt set (with thresholds) when its folder or Hub repo has one, else the built-in default."""
    path = model_prompt_file(model)
    return PromptSet.load(path)


def model_prompt_file(model: str | Path | None) -> Path | None:
    """`zero_shot_prompts.json` of a model folder or Hub repo id (fetched into the Hub cache), or None."""
    if model is None or str(model) == "":
        return None
    if Path(model).is_dir():
        path = Path(model) / MODEL_PROMPTS_FILE
        return path if path.is_file() else None
    try:
        found = cached_file(str(model), MODEL_PROMPTS_FILE, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):  # not a repo id, or not reachable
        return None
    return Path(found) if found else None
