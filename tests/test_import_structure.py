"""The package's imports point one way (docs/architecture.md): no import cycle between its modules, no import of
the package or of a core dependency hidden inside a function (only optional extras load lazily, and the CLI loads
its command modules with importlib), and no module imports from a layer above its own.

The modules are read from the source tree with `ast`, nothing is imported, so a cycle that only shows at run time
in one import order is found as well.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Optional extras (setup.cfg's extras_require): these may be imported where they are used.
OPTIONAL = {"matplotlib", "faiss", "sacrebleu", "rouge_score", "nltk", "pylibjpeg", "openjpeg", "libjpeg", "gradio",
            "highdicom", "dicomweb_client", "pytest"}


def package_dirs() -> dict[str, Path]:
    """Import name -> source folder, from setup.cfg's package_dir (cmr_clip.modeling lives in modeling/)."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    mapping = {}
    for line in config["options"]["package_dir"].strip().splitlines():
        name, _, folder = (part.strip() for part in line.partition("="))
        mapping[name] = REPO / folder
    return mapping


def core_dependencies() -> set[str]:
    """Import names of setup.cfg's install_requires (the ones every install has)."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    aliases = {"scikit-learn": "sklearn", "huggingface_hub": "huggingface_hub"}
    names = set()
    for line in config["options"]["install_requires"].strip().splitlines():
        requirement = line.strip().split(">")[0].split("=")[0].split("<")[0].strip()
        names.add(aliases.get(requirement, requirement.replace("-", "_")))
    return names


def discover_modules() -> dict[str, Path]:
    dirs = package_dirs()
    modules = {}
    for package, folder in dirs.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            name = ".".join([package, *parts]).removesuffix(".__init__")
            modules[name] = path
    return modules


MODULES = discover_modules()


def imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names an import statement of `module` reaches: `from x import y` reaches x.y when y is a module
    (importing x.y runs x's `__init__` whatever imports it, so that is no dependency of this module), else x."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return sorted({f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names})


def walk_imports(module: str):
    """(imported name, line, inside a function) for every import statement, TYPE_CHECKING blocks left out."""
    tree = ast.parse(MODULES[module].read_text())

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in imported_names(module, child):
                    yield name, child.lineno, in_function
            yield from visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    yield from visit(tree, False)


def import_graph() -> dict[str, set[str]]:
    return {module: {name for name, _, inside in walk_imports(module) if not inside and name in MODULES and name != module}
            for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def connect(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_walk_sees_the_whole_package():
    assert {"cmr_clip", "cmr_clip.modeling.modeling_cmr_clip", "cmr_clip.processing.reader",
            "cmr_clip.embeddings"} <= set(MODULES)
    assert all(path.is_file() for path in MODULES.values())
    assert {"torch", "transformers", "pydicom", "sklearn"} <= core_dependencies()


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in found)


def test_no_package_or_core_import_inside_a_function():
    core = core_dependencies()
    hidden = [f"{MODULES[module].relative_to(REPO)}:{line} imports {name}"
              for module in MODULES for name, line, inside in walk_imports(module)
              if inside and (name == "cmr_clip" or name.startswith("cmr_clip.") or name.split(".")[0] in core)
              and name.split(".")[0] not in OPTIONAL]
    assert not hidden, "imports inside functions (move them to the top of the module):\n" + "\n".join(hidden)


# docs/architecture.md's layers, bottom to top. A module belongs to the longest prefix that names it; every
# `__main__` module is an entry point, on the top layer with the commands.
LAYERS = {
    "cmr_clip.vocabulary": 0, "cmr_clip.privacy": 0, "cmr_clip.precision": 0, "cmr_clip.modeling": 0,
    "cmr_clip.processing": 1,
    "cmr_clip.synthetic": 2, "cmr_clip.data": 2,
    "cmr_clip.embeddings": 3,
    "cmr_clip.pipelines": 4, "cmr_clip.index": 4,
    "cmr_clip.evaluation": 5, "cmr_clip.hub": 5,
    "cmr_clip.training": 6, "cmr_clip.release": 6,
    "cmr_clip.demo": 7, "cmr_clip.app": 7,
    "cmr_clip.commands": 8, "cmr_clip.cli": 8, "cmr_clip": 8,
}


def layer_of(module: str) -> tuple[str, int]:
    """(the layer's prefix, its level) of a module."""
    if module.endswith(".__main__"):
        return "__main__", max(LAYERS.values())
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return prefix, LAYERS[prefix]


def test_every_module_has_a_layer():
    assert all(layer_of(module) for module in MODULES)
    assert layer_of("cmr_clip.processing.reader") == ("cmr_clip.processing", 1)
    assert layer_of("cmr_clip.training.__main__")[1] == 8 and layer_of("cmr_clip")[1] == 8


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for module, targets in import_graph().items():
        prefix, level = layer_of(module)
        for target in targets:
            target_prefix, target_level = layer_of(target)
            # The bottom layer imports nothing of the package outside its own part.
            if target_level > level or (level == 0 and target_prefix != prefix):
                upward.append(f"{module} (layer {level}) imports {target} (layer {target_level})")
    assert not upward, "imports against the layer order of docs/architecture.md:\n" + "\n".join(sorted(upward))
