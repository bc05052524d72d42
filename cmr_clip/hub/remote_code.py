"""Remote code: the package's modules copied flat into a model folder, so that it loads with
`trust_remote_code=True` where cmr_clip is not installed.

`export_remote_code(dir)` copies the modules that define the model's classes flat into the folder, with the
package's relative imports rewritten to the flat form transformers' dynamic modules follow
(`from ..processing import X` -> `from .module_defining_x import X`), and writes `auto_map` (config.json,
processor_config.json) and `custom_pipelines` (config.json). The package's modules stay the only source of that
code: it is copied at publish time, never kept twice in the repository. pydicom and scipy are not transformers
dependencies, so in the copies their imports are guarded: without them, already-processed inputs work and a DICOM path
raises an ImportError that says what to install. `custom_pipelines` is written only here, at publish time: it
takes precedence over the package's own registration, so a folder that has it needs `trust_remote_code=True`
even where cmr_clip is installed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

from transformers.pipelines import PIPELINE_REGISTRY

from .. import modeling, processing
from ..pipelines.prompts import MODEL_PROMPTS_FILE, PromptSet
from ..privacy import write_json
from .publication import HubPublishError, publication, read_json

# Imports a remote machine may lack (not transformers dependencies): guarded in the copies.
OPTIONAL_IMPORTS = {"pydicom": "reading DICOM studies", "scipy": "finding long-axis views from a study's anatomy"}
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
    save_dir = Path(save_dir)
    spec = publication(save_dir)
    config = read_json(save_dir / "config.json", required=True)
    model_map = {auto: _class_ref(name) for auto, name in spec.model_auto_map.items()}
    roots = [_class(name) for name in spec.model_auto_map.values()]
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
        processor_map = {auto: _class_ref(name) for auto, name in spec.processor_auto_map.items()}
        roots += [_class(name) for name in spec.processor_auto_map.values()]

    written = _copy_flat([inspect.getmodule(cls) for cls in roots], save_dir)
    if "zero-shot-cmr" in pipelines and not (save_dir / MODEL_PROMPTS_FILE).is_file():
        # The copied prompts module cannot reach the package's built-in prompt files: ship the default set.
        PromptSet.load(None).save(save_dir)
        written.append(MODEL_PROMPTS_FILE)
    config["auto_map"] = model_map
    if pipelines:
        config["custom_pipelines"] = pipelines
    write_json(save_dir / "config.json", config, sort_keys=True)
    if processor_config:
        processor_config["auto_map"] = processor_map
        if isinstance(processor_config.get("feature_extractor"), dict) and "AutoFeatureExtractor" in processor_map:
            processor_config["feature_extractor"]["auto_map"] = {"AutoFeatureExtractor": processor_map["AutoFeatureExtractor"]}
        write_json(save_dir / "processor_config.json", processor_config, sort_keys=True)
    preprocessor = read_json(save_dir / "preprocessor_config.json")  # a study processor saved on its own
    if preprocessor and "AutoFeatureExtractor" in processor_map:
        preprocessor["auto_map"] = {"AutoFeatureExtractor": processor_map["AutoFeatureExtractor"]}
        write_json(save_dir / "preprocessor_config.json", preprocessor, sort_keys=True)
    return written


def _class(name: str) -> type:
    """A model or processor class of the package by name (the publication spec names them)."""
    cls = getattr(modeling, name, None) or getattr(processing, name, None)
    if cls is None:
        raise HubPublishError(f"cmr_clip has no class {name}; this installation cannot publish that model type's code.")
    return cls


def _class_ref(name: str) -> str:
    cls = _class(name)
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


