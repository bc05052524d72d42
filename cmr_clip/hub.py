"""Publishing to the Hugging Face Hub: model cards, remote code, the PHI guard, and `push`.

    from cmr_clip.hub import push, model_card, export_remote_code, check_no_phi

    push("cmr-clip-demo", "my-org/cmr-clip-demo", private=True)   # what `cmr-clip push DIR --repo-id ...` does

`push` stages what a user of the repo needs in a temporary folder — weights (safetensors), config.json,
the processor (tokenizer, study processor with its layout), the prompt set with its thresholds, a
generated model card (README.md) and the package's own modeling, processing and pipeline modules —
refuses the upload if any text file looks like it carries a patient identifier (`PHIError`, naming the
file and field), and uploads the folder in one commit. Checkpoints, corpora, cohorts, metrics.json
(its figures are in the card) and anything else in the directory stay behind.

Remote code: `export_remote_code(dir)` copies the modules that define the model's classes flat into
the folder, with the package's relative imports rewritten to the flat form transformers' dynamic
modules follow (`from ..processing import X` -> `from .module_defining_x import X`), and writes
`auto_map` (config.json, processor_config.json) and `custom_pipelines` (config.json). Then, on a machine
without cmr_clip, `AutoModel/AutoProcessor.from_pretrained(repo, trust_remote_code=True)` and
`pipeline("zero-shot-cmr", model=repo, trust_remote_code=True)` work. The package's modules stay the only
source of that code: it is copied at publish time, never kept twice in the repository. pydicom is not a
transformers dependency, so in the copies its imports are guarded: without it, already-processed inputs
(`{"pixel_values_videos": ...}`, cached embeddings) work and a DICOM path raises an ImportError that says
to install pydicom. `custom_pipelines` is written only here, at publish time: it takes precedence over
the package's own registration, so a folder that has it needs `trust_remote_code=True` even where
cmr_clip is installed.

The PHI guard lives in the privacy layer (`cmr_clip.privacy`: `check_no_phi`, `scan_folder`, `check_dataset`,
`PHIError`, still importable from here for one release). Every route goes through it: `push` and its dry
run share `stage`, `push_dataset` and the dataset dry run share `stage_dataset`. A model's tokenizer
vocabulary is checked against the identities `prepare` saw when the corpus is known (`data_dir`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .modeling.convert_original_checkpoint import CONVERSION_CHECK_FILE, PROVENANCE_FILE
from .pipelines.prompts import MODEL_PROMPTS_FILE, PromptSet
from .privacy import PHIError, check_dataset, check_no_phi, load_identity_hashes, scan_folder  # noqa: F401 - PHIError, check_dataset: re-exported for one release

# ---------------------------------------------------------------------------------------------------------
# What each model type publishes: Auto classes for its config and model, the processor classes, and the
# pipelines (tasks registered with transformers when cmr_clip is imported) that go with it.


@dataclass(frozen=True)
class Publication:
    pipeline_tag: str
    tasks: tuple[str, ...]
    model_auto_map: dict[str, str]
    processor_auto_map: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    summary: str = ""


# The Hub's pipeline_tag vocabulary is fixed and has no cardiac-MRI or video-text zero-shot task. A CMR-CLIP
# study is a video and the zero-shot pipeline answers class probabilities, so "video-classification" (what
# video-text CLIP models such as X-CLIP use); CMR-TARGET writes text from a study video:
# "video-text-to-text". Our own task names go into the tags.
PUBLICATIONS: dict[str, Publication] = {
    "cmr_clip": Publication(
        pipeline_tag="video-classification",
        tasks=("zero-shot-cmr",),
        model_auto_map={"AutoConfig": "CMRCLIPConfig", "AutoModel": "CMRCLIPModel"},
        processor_auto_map={"AutoProcessor": "CMRCLIPProcessor", "AutoFeatureExtractor": "CMRStudyProcessor"},
        tags=("cmr-clip", "zero-shot-cmr", "cardiac-mri", "medical-imaging", "video-text", "clip"),
        summary="a video-text contrastive model that embeds a whole cardiac MRI study (cine and LGE, short- and "
                "long-axis views, as one video) and report impression text in one space, for zero-shot "
                "findings, case retrieval and few-shot probes",
    ),
    "cmr_target": Publication(
        pipeline_tag="video-text-to-text",
        tasks=("cmr-report-generation",),
        model_auto_map={"AutoConfig": "CMRTargetConfig", "AutoModel": "CMRTargetForConditionalGeneration"},
        processor_auto_map={"AutoProcessor": "CMRTargetProcessor", "AutoFeatureExtractor": "CMRStudyProcessor"},
        tags=("cmr-target", "cmr-report-generation", "cardiac-mri", "medical-imaging", "report-generation"),
        summary="a report generator that drafts a cardiac MRI report impression from a whole study, on top of "
                "CMR-CLIP's video tower",
    ),
}


class HubPublishError(ValueError):
    """The directory cannot be published as asked (not a saved model, unknown model type)."""


def publication(save_dir: str | Path) -> Publication:
    config = read_json(Path(save_dir) / "config.json", required=True)
    model_type = config.get("model_type")
    if model_type not in PUBLICATIONS:
        raise HubPublishError(f"{save_dir}/config.json has model_type {model_type!r}; cmr-clip publishes "
                              f"{sorted(PUBLICATIONS)}.")
    return PUBLICATIONS[model_type]


def read_json(path: Path, required: bool = False) -> dict:
    if not path.is_file():
        if required:
            raise HubPublishError(f"{path} not found: pass a directory written by save_pretrained (or cmr-clip train).")
        return {}
    return json.loads(path.read_text())


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------------
# Remote code

# Imports a remote machine may lack (not transformers dependencies): guarded in the copies.
OPTIONAL_IMPORTS = {"pydicom": "reading DICOM studies"}
MISSING_DEPENDENCY_MODULE = "missing_dependency"
MISSING_DEPENDENCY_SOURCE = '''"""Written by cmr_clip.hub into remote-code folders: stands in for an optional package that is not installed.

Using the stand-in (an attribute, a call) raises an ImportError saying what to install; it is also an
exception class, so `except Name:` clauses that name something from the package still compile and run.
"""


class _Missing(type):
    def __getattr__(cls, name):
        raise ImportError(cls.message)

    def __call__(cls, *args, **kwargs):
        raise ImportError(cls.message)


def missing(package, purpose):
    return _Missing(f"Missing_{package}", (Exception,), {"message": f"{purpose} needs {package}: pip install {package}"})
'''


def export_remote_code(save_dir: str | Path) -> list[str]:
    """Copy the modules defining the model's, processor's and pipelines' classes flat into `save_dir` and write
    `auto_map` / `custom_pipelines`; returns the names of the files written. Publish-time only (see module doc)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    save_dir = Path(save_dir)
    spec = publication(save_dir)
    package = importlib.import_module("cmr_clip")
    config = read_json(save_dir / "config.json", required=True)
    model_map = {auto: _class_ref(package, name) for auto, name in spec.model_auto_map.items()}
    roots = [_class(package, name) for name in spec.model_auto_map.values()]
    pipelines = {}
    for task in spec.tasks:
        if task not in PIPELINE_REGISTRY.supported_tasks:
            continue
        info = PIPELINE_REGISTRY.supported_tasks[task]
        roots.append(info["impl"])
        pipelines[task] = {"impl": f"{_leaf(info['impl'].__module__)}.{info['impl'].__name__}",
                           "pt": [c.__name__ for c in info["pt"]], "tf": [], "type": info.get("type", "multimodal")}
        for auto in info["pt"]:  # the Auto class the pipeline loads the model with must find the remote class
            model_map.setdefault(auto.__name__, model_map["AutoModel"])
    processor_config = read_json(save_dir / "processor_config.json")
    processor_map = {}
    if processor_config:
        processor_map = {auto: _class_ref(package, name) for auto, name in spec.processor_auto_map.items()}
        roots += [_class(package, name) for name in spec.processor_auto_map.values()]

    written = _copy_flat([inspect.getmodule(cls) for cls in roots], save_dir)
    if "zero-shot-cmr" in pipelines and not (save_dir / MODEL_PROMPTS_FILE).is_file():
        # The copied prompts module cannot reach the package's built-in prompt files: ship the default set.
        PromptSet.load(None).save(save_dir)
        written.append(MODEL_PROMPTS_FILE)
    config["auto_map"] = model_map
    if pipelines:
        config["custom_pipelines"] = pipelines
    write_json(save_dir / "config.json", config)
    if processor_config:
        processor_config["auto_map"] = processor_map
        if isinstance(processor_config.get("feature_extractor"), dict) and "AutoFeatureExtractor" in processor_map:
            processor_config["feature_extractor"]["auto_map"] = {"AutoFeatureExtractor": processor_map["AutoFeatureExtractor"]}
        write_json(save_dir / "processor_config.json", processor_config)
    preprocessor = read_json(save_dir / "preprocessor_config.json")  # a study processor saved on its own
    if preprocessor and "AutoFeatureExtractor" in processor_map:
        preprocessor["auto_map"] = {"AutoFeatureExtractor": processor_map["AutoFeatureExtractor"]}
        write_json(save_dir / "preprocessor_config.json", preprocessor)
    return written


def _class(package, name: str) -> type:
    cls = getattr(package, name, None)
    if cls is None:
        raise HubPublishError(f"cmr_clip has no class {name}; this installation cannot publish that model type's code.")
    return cls


def _class_ref(package, name: str) -> str:
    cls = _class(package, name)
    return f"{_leaf(cls.__module__)}.{cls.__name__}"


def _leaf(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1]


def _copy_flat(modules: list, target: Path) -> list[str]:
    """Each module and every module it imports relatively, rewritten to flat imports, as `target/<leaf>.py`."""
    pending, sources, origins = list(modules), {}, {}
    while pending:
        module = pending.pop()
        leaf = _leaf(module.__name__)
        if origins.setdefault(leaf, module.__name__) != module.__name__:
            raise HubPublishError(f"{origins[leaf]} and {module.__name__} would both be copied as {leaf}.py; remote code "
                                  "is flat, so module names must differ.")
        if leaf in sources:
            continue
        source, needed = flat_source(module)
        sources[leaf] = source
        pending += [m for m in needed if _leaf(m.__name__) not in sources]
    if any(MISSING_DEPENDENCY_MODULE in source for source in sources.values()):
        sources[MISSING_DEPENDENCY_MODULE] = MISSING_DEPENDENCY_SOURCE
    for leaf, source in sources.items():
        (target / f"{leaf}.py").write_text(source)
    return sorted(f"{leaf}.py" for leaf in sources)


def flat_source(module) -> tuple[str, list]:
    """`module`'s source with relative imports pointing at flat sibling files and optional dependencies guarded,
    and the modules those imports need."""
    source = Path(inspect.getsourcefile(module)).read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    replacements, needed = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            text, modules = _flat_import(node, module)
            replacements[(node.lineno, node.end_lineno)] = text
            needed += modules
    for group in _optional_import_groups(tree):
        first, last = group[0].lineno, group[-1].end_lineno
        body = "\n".join("    " + line for line in lines[first - 1:last])
        names = " = ".join(_bound_names(group))
        package = _top_module(group[0])
        replacements[(first, last)] = (
            f"try:\n{body}\n"
            f"except ImportError:  # written by cmr_clip.hub: processed inputs work without {package}\n"
            f"    from .{MISSING_DEPENDENCY_MODULE} import missing as _missing_dependency\n\n"
            f"    {names} = _missing_dependency({package!r}, {OPTIONAL_IMPORTS[package]!r})"
        )
    for (first, last), text in sorted(replacements.items(), reverse=True):
        lines[first - 1:last] = text.splitlines()
    return "\n".join(lines) + "\n", needed


def _flat_import(node: ast.ImportFrom, module) -> tuple[str, list]:
    """`from ..pkg.mod import A, B as C` -> one `from .leaf import ...` line per defining module."""
    base = importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__)
    imported = importlib.import_module(base)
    by_module: dict[str, list[str]] = {}
    modules = []
    for alias in node.names:
        value = getattr(imported, alias.name)
        if inspect.ismodule(value):
            origin = value
        elif hasattr(imported, "__path__"):  # a name re-exported by a package: the module that defines it
            origin = inspect.getmodule(value)
        else:
            origin = imported
        if origin is None or not origin.__name__.startswith("cmr_clip."):
            raise HubPublishError(f"{module.__name__}: cannot copy `from {base} import {alias.name}` as remote code.")
        if hasattr(origin, "__path__"):
            raise HubPublishError(f"{module.__name__}: `{alias.name}` is defined in a package __init__; remote code "
                                  "needs it in a module file.")
        modules.append(origin)
        by_module.setdefault(_leaf(origin.__name__), []).append(
            alias.name if alias.asname is None else f"{alias.name} as {alias.asname}")
    indent = " " * node.col_offset
    return "\n".join(f"{indent}from .{leaf} import {', '.join(names)}" for leaf, names in by_module.items()), modules


def _top_module(node) -> str:
    name = node.names[0].name if isinstance(node, ast.Import) else node.module
    return name.split(".")[0]


def _optional_import_groups(tree: ast.Module) -> list[list]:
    """Runs of consecutive module-level imports of optional packages (nested ones are refused: guard them in
    the source)."""
    groups, current = [], []
    for node in tree.body:
        is_import = isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.level == 0)
        optional = is_import and _top_module(node) in OPTIONAL_IMPORTS
        if optional and (not current or _top_module(current[0]) == _top_module(node)):
            current.append(node)
            continue
        if current:
            groups.append(current)
        current = [node] if optional else []
    if current:
        groups.append(current)
    for node in ast.walk(tree):
        if node in tree.body or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            continue
        if _top_module(node) in OPTIONAL_IMPORTS and not _inside_try(tree, node):
            raise HubPublishError(f"line {node.lineno}: a nested import of {_top_module(node)} outside a try block "
                                  "would stop remote loading without it; wrap it in try/except ImportError.")
    return groups


def _inside_try(tree, target) -> bool:
    return any(isinstance(node, ast.Try) and any(child is target for child in ast.walk(node)) for node in ast.walk(tree))


def _bound_names(group: list) -> list[str]:
    names = []
    for node in group:
        for alias in node.names:
            names.append(alias.asname or (alias.name.split(".")[0] if isinstance(node, ast.Import) else alias.name))
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------
# Model card

# Only what is known of the paper; a publisher with the full reference passes `citation=`.
CITATION = """@article{nakashima2026cmrclip,
  title   = {CMR-CLIP},
  author  = {Nakashima and others},
  journal = {Nature Communications},
  year    = {2026}
}"""


def training_data_summary(data_dir: str | Path | None) -> dict | None:
    """Counts per split, vendors and field strengths of a prepared corpus (`cmr-clip prepare`); no identifiers.
    None without a corpus."""
    if data_dir is None or not (Path(data_dir) / "dataset_dict.json").is_file():
        return None
    from collections import Counter

    from datasets import load_from_disk

    corpus = load_from_disk(str(data_dir))
    summary = {"splits": {name: len(split) for name, split in corpus.items()}, "vendors": Counter(),
               "field_strengths": Counter()}
    for split in corpus.values():
        columns = split.column_names
        if "vendor" in columns:
            summary["vendors"].update(str(v or "unknown") for v in split["vendor"])
        if "field_strength" in columns:
            summary["field_strengths"].update(f"{v:g} T" if v == v and v is not None else "unknown"
                                              for v in split["field_strength"])
    report = read_json(Path(data_dir) / "prepare_report.json")
    summary["skipped"] = report.get("skipped")
    summary["patients_per_split"] = report.get("patients_per_split")
    summary["vendors"], summary["field_strengths"] = dict(summary["vendors"]), dict(summary["field_strengths"])
    return summary


def _value(figure):
    """A metrics.json figure: a number, or {"value", "low", "high"} from the bootstrap."""
    if isinstance(figure, dict):
        figure = figure.get("value")
    return float(figure) if isinstance(figure, (int, float)) and figure == figure else None


def card_results(metrics: dict) -> list[tuple[str, str, str, float]]:
    """(task, metric type, metric name, value) for the held-out test figures that `cmr-clip demo`, `train` and
    `evaluate` write to metrics.json: zero-shot AUC per finding, LVEF estimate MAE, retrieval Recall@K."""
    results = []
    zero_shot = metrics.get("test_zero_shot") or metrics.get("zero_shot") or {}
    for finding, figure in (zero_shot.get("auc") or {}).items():
        if _value(figure) is not None:
            results.append(("zero-shot findings", "roc_auc", f"AUC {finding}", _value(figure)))
    lvef = (zero_shot.get("lvef_estimate") or {}).get("mae")
    if _value(lvef) is not None:
        results.append(("zero-shot LVEF estimate", "mae", "LVEF MAE (percentage points)", _value(lvef)))
    retrieval = metrics.get("test_retrieval") or metrics.get("retrieval") or {}
    for direction in ("text_to_study", "study_to_text"):
        for k in (1, 5, 10):
            figure = _value(retrieval.get(f"{direction}_R@{k}"))
            if figure is not None:
                results.append(("retrieval", "recall", f"{direction.replace('_', '-')} Recall@{k}", figure))
    return results


def model_card(save_dir: str | Path, data_dir: str | Path | None = None, license: str | None = None,
               datasets: list[str] | None = None, repo_id: str | None = None, training_data: str | None = None,
               citation: str = CITATION):
    """A `huggingface_hub.ModelCard` for a saved CMR-CLIP / CMR-TARGET directory: Hub metadata (library,
    pipeline tag, tags, license, datasets, model-index results from metrics.json), intended use, training
    data summary (from `data_dir`, a prepared corpus; `save_dir/corpus` when the demo left one there),
    limitations, how to load and how to cite. A converted release (`cmr-clip convert-original`) also gets its
    provenance (source repo and revision, checksums, the conversion check) and, unless `license` is given, the
    licence its source states ("unknown" when it states none; apache-2.0 for the package's own models).
    Nothing in it comes from patient-level records."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    save_dir = Path(save_dir)
    spec = publication(save_dir)
    metrics = read_json(save_dir / "metrics.json")
    origin = read_json(save_dir / PROVENANCE_FILE)
    stated = origin.get("license") or {}
    license = license or (stated.get("stated") or "unknown" if origin else "apache-2.0")
    if origin and training_data is None:
        training_data = ("The authors' own studies and reports, described in the paper; they are not part of this "
                         "repository and nothing more about them is known here.")
    if data_dir is None and (save_dir / "corpus").is_dir():
        data_dir = save_dir / "corpus"
    summary = training_data_summary(data_dir)
    name = repo_id or save_dir.resolve().name
    results = card_results(metrics)
    test_n = (metrics.get("splits") or {}).get("test") or (summary or {}).get("splits", {}).get("test")
    dataset_name = f"held-out test split ({test_n} studies)" if test_n else "held-out test split"
    eval_results = [EvalResult(task_type=spec.pipeline_tag, task_name=task, dataset_type=(datasets or ["held-out-test"])[0],
                               dataset_name=dataset_name, dataset_split="test", metric_type=metric_type,
                               metric_name=metric_name, metric_value=round(value, 4))
                    for task, metric_type, metric_name, value in results]
    data = ModelCardData(
        library_name="transformers", pipeline_tag=spec.pipeline_tag, tags=list(spec.tags), license=license,
        datasets=datasets or None, metrics=sorted({r[1] for r in results}) or None, model_name=name,
        eval_results=eval_results or None,
        **({"license_name": stated.get("name"), "license_link": stated.get("link")} if license == "other" else {}),
    )
    sections = [
        f"# {name}\n\n{spec.tags[0].upper()}: {spec.summary}. Built with "
        "the `cmr-clip` package as an ordinary transformers model.",
        *([_provenance(origin, read_json(save_dir / CONVERSION_CHECK_FILE))] if origin else []),
        _intended_use(),
        _how_to_load(name, spec),
        _training_data(summary, training_data, metrics),
        _evaluation(results, dataset_name, metrics),
        _limitations(),
        f"## Citation\n\nNakashima et al., *Nature Communications* 2026:\n\n```bibtex\n{citation}\n```",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def _provenance(origin: dict, check: dict) -> str:
    """The converted release's source, checksums, stated licence and conversion check, from the converter's records."""
    source, stated = origin.get("source") or {}, origin.get("license") or {}
    where = (f"the Hub repository `{source.get('repo_id')}` at revision `{source.get('revision')}`"
             if source.get("repo_id") else f"a {source.get('kind', 'local copy')} of the release")
    licence = stated.get("stated") or "not stated by the source"
    if stated.get("name") or stated.get("link"):
        licence += f" ({', '.join(str(v) for v in (stated.get('name'), stated.get('link')) if v)})"
    lines = ["## Provenance", "",
             f"Converted with `cmr-clip convert-original` from the authors' released weights: {where}.", "",
             f"- source file: `{source.get('checkpoint_file') or 'checkpoint'}`, sha256 `{source.get('checkpoint_sha256')}`",
             f"- source config.json: sha256 `{source.get('config_sha256')}`",
             f"- licence, as the source states it: {licence}",
             f"- text tower tokenizer: {origin.get('text_model')}"]
    if check:
        lines.append(f"- conversion check: maximum absolute difference {check.get('max_abs_difference'):.2e} between "
                     "this model and an independent recomputation of the release's forward from the source weights "
                     f"(tolerance {check.get('tolerance')}; `{CONVERSION_CHECK_FILE}`)")
    lines.append("\nThe paper's citation is at the end of this card.")
    return "\n".join(lines)


def _intended_use() -> str:
    return ("## Intended use\n\nResearch on cardiac MRI representation learning: zero-shot findings, case retrieval, "
            "few-shot probes and report drafting as a *reader's assistant* whose output a cardiologist or radiologist "
            "checks. **It is not a diagnosis**, not a medical device, and not validated for clinical decisions.")


def _how_to_load(name: str, spec: Publication) -> str:
    task = spec.tasks[0]
    return (
        "## How to load\n\nWith the package (`pip install cmr-clip`):\n\n```python\nimport cmr_clip\n"
        f"from transformers import AutoModel, AutoProcessor, pipeline\n\nmodel = AutoModel.from_pretrained(\"{name}\")\n"
        f"processor = AutoProcessor.from_pretrained(\"{name}\")\n"
        f"classify = pipeline(\"{task}\", model=\"{name}\")\nclassify(\"path/to/dicom-study\")\n```\n\n"
        "Without it, the repository's own code (the package's modules, copied at upload) loads with "
        "`trust_remote_code=True`:\n\n```python\nfrom transformers import AutoModel, AutoProcessor, pipeline\n\n"
        f"model = AutoModel.from_pretrained(\"{name}\", trust_remote_code=True)\n"
        f"classify = pipeline(\"{task}\", model=\"{name}\", trust_remote_code=True)\n"
        "classify({\"pixel_values_videos\": frames})   # (T, 3, H, W), already processed\n```\n\n"
        "Reading DICOM studies (a folder or zip path as input) also needs `pip install pydicom`.")


def _training_data(summary: dict | None, description: str | None, metrics: dict) -> str:
    lines = ["## Training data", ""]
    synthetic = "settings" in metrics and "studies" in (metrics.get("settings") or {})
    if description:
        lines.append(description)
    elif synthetic:
        lines.append("A synthetic cohort written by `cmr-clip demo`: beating-heart phantoms with known findings, imaged "
                     "as cine and LGE and written as vendor-style DICOM; no patient data.")
    if summary is None:
        lines.append("" if description or synthetic else "Not described by the publisher.")
        return "\n".join(lines).rstrip()
    lines += ["", "| split | studies |", "|---|---|"]
    lines += [f"| {split} | {count} |" for split, count in summary["splits"].items()]
    if summary.get("patients_per_split"):
        lines.append("\nSplits are by patient (no patient in two splits); patients per split: " +
                     ", ".join(f"{k} {v}" for k, v in summary["patients_per_split"].items()) + ".")
    if summary["vendors"]:
        lines.append("\nVendors (studies): " + ", ".join(f"{k} {v}" for k, v in sorted(summary["vendors"].items())) + ".")
    if summary["field_strengths"]:
        lines.append("Field strengths (studies): " +
                     ", ".join(f"{k} {v}" for k, v in sorted(summary["field_strengths"].items())) + ".")
    if summary.get("skipped"):
        lines.append(f"Studies left out because they could not be read: {summary['skipped']}.")
    return "\n".join(lines)


def _evaluation(results: list, dataset_name: str, metrics: dict) -> str:
    if not results:
        return "## Evaluation\n\nNo held-out figures were published with this model (no metrics.json)."
    lines = ["## Evaluation", "", f"On the {dataset_name}, as recorded in the training run's `metrics.json`:", "",
             "| task | metric | value |", "|---|---|---|"]
    lines += [f"| {task} | {name} | {value:.3f} |" for task, _, name, value in results]
    zero_shot = metrics.get("test_zero_shot") or metrics.get("zero_shot") or {}
    if zero_shot.get("threshold_rule"):
        lines.append(f"\nYes/no thresholds for findings: {zero_shot['threshold_rule']} (shipped in "
                     f"`{MODEL_PROMPTS_FILE}`).")
    return "\n".join(lines)


def _limitations() -> str:
    return ("## Limitations\n\n- Figures come from the held-out split of the training data; other hospitals, vendors, "
            "field strengths, protocols and populations may give different and worse results.\n"
            "- A study embedding depends on which series the DICOM processor recognises; check `warnings` and missing "
            "views in the processor's output.\n"
            "- Zero-shot answers depend on the prompt wording; thresholds were chosen on validation studies of the "
            "same data.\n- A model trained on the synthetic cohort only has learned phantoms, not patients.\n"
            "- Outputs are not a diagnosis.")


# ---------------------------------------------------------------------------------------------------------
# Staging and upload

# What a user of the repo needs, by file name (top level of the saved directory only): weights, configs, the
# processor (tokenizer, study processor with its layout), the prompt set with its thresholds, and a converted
# release's provenance and conversion check.
PUBLISHED_FILES = (
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json", "processor_config.json",
    "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "chat_template.jinja", "adapter_config.json",
    MODEL_PROMPTS_FILE, PROVENANCE_FILE, CONVERSION_CHECK_FILE,
)


def stage(save_dir: str | Path, out_dir: str | Path, remote_code: bool = True, card=None, **card_options) -> list[str]:
    """Write into `out_dir` exactly what `push` uploads, PHI guard included; returns the file names."""
    import fnmatch

    save_dir, out_dir = Path(save_dir), Path(out_dir)
    publication(save_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(save_dir.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in PUBLISHED_FILES):
            shutil.copy2(path, out_dir / path.name)
    if remote_code:
        export_remote_code(out_dir)
    if card is None:
        card = model_card(save_dir, **card_options)
    check_no_phi(card, "README.md (model card)")
    (out_dir / "README.md").write_text(str(card))
    scan_folder(out_dir, identities=_corpus_identities(save_dir, card_options.get("data_dir")))
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())


def _corpus_identities(save_dir: Path, data_dir) -> tuple[str, set[str]] | None:
    """The salted identity hashes `prepare` kept for the training corpus (`data_dir`, or `save_dir/corpus`)."""
    for folder in (data_dir, save_dir / "corpus"):
        if folder is not None and (found := load_identity_hashes(folder)) is not None:
            return found
    return None


def push(save_dir: str | Path, repo_id: str, private: bool = False, remote_code: bool = True,
         commit_message: str = "Upload CMR model with cmr-clip", token: str | None = None, endpoint: str | None = None,
         **card_options):
    """Stage `save_dir` (see `stage`), refuse it on PHI, create the repo (private if asked) and upload everything
    in one commit. Returns the commit info. `card_options` go to `model_card` (data_dir, license, datasets, ...)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    with tempfile.TemporaryDirectory(prefix="cmr-clip-push-") as staging:
        files = stage(save_dir, staging, remote_code=remote_code, repo_id=repo_id, **card_options)
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(staging) / name)) for name in files]
        return api.create_commit(repo_id, operations=operations, commit_message=commit_message, repo_type="model")


def push_pretrained(model, processor, repo_id: str, private: bool = False, **options):
    """`save_pretrained` of a model and its processor into a temporary folder, then `push` (card, remote code and
    PHI guard included) — the guarded counterpart of `model.push_to_hub(...)` / `processor.push_to_hub(...)`."""
    with tempfile.TemporaryDirectory(prefix="cmr-clip-save-") as save_dir:
        model.save_pretrained(save_dir)
        if processor is not None:
            processor.save_pretrained(save_dir)
        if getattr(model, "name_or_path", None) and (Path(model.name_or_path) / MODEL_PROMPTS_FILE).is_file():
            shutil.copy2(Path(model.name_or_path) / MODEL_PROMPTS_FILE, save_dir)
        return push(save_dir, repo_id, private=private, **options)


# Corpus columns that name a study: folder names of PACS exports are often accession numbers, so they are
# dropped before a dataset goes to the Hub unless the caller keeps them on purpose.
DROPPED_DATASET_COLUMNS = ("study_id",)


def stage_dataset(dataset, drop_columns=DROPPED_DATASET_COLUMNS, where: str = "dataset"):
    """What `push_dataset` uploads: the corpus (a folder written by `cmr-clip prepare`, or a Dataset /
    DatasetDict) without the columns that name studies, checked by the PHI guard (`PHIError`)."""
    if isinstance(dataset, (str, Path)):
        from datasets import load_from_disk

        dataset = load_from_disk(str(dataset))
    splits = dataset.values() if type(dataset).__name__ == "DatasetDict" else [dataset]
    present = [c for c in drop_columns if all(c in split.column_names for split in splits)]
    if present:
        dataset = dataset.remove_columns(present)
    check_dataset(dataset, where)
    return dataset


def push_dataset(dataset, repo_id: str, private: bool = False, drop_columns=DROPPED_DATASET_COLUMNS,
                 token: str | None = None, **push_options):
    """`stage_dataset`, then `push_to_hub`: nothing is uploaded if the guard refuses."""
    staged = stage_dataset(dataset, drop_columns, f"dataset {repo_id}")
    return staged.push_to_hub(repo_id, private=private, token=token, **push_options)
