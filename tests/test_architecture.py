"""The layout's promises, checked on the source: dependencies point one way and have no cycles.

Layers, bottom up: ``graphs/`` and ``backends/`` -> ``core/`` (the paper) -> ``variants/`` and
``convert/`` -> ``analysis/``, ``testing/`` and the apps (``generation``, ``training``, ``tasks``,
``explain``, ``explorer``, ``cli``).  The import graph is read from the source with ``ast``:
every ``import`` statement, at module level or inside a function, is an edge.
"""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gnn_transformer

PACKAGE = Path(gnn_transformer.__file__).parent
APPS = {"generation", "training", "tasks", "explain", "explorer", "cli"}
ABOVE_CORE = {"core", "variants", "convert", "analysis", "testing", *APPS}
CORE_MAY_IMPORT = {"core", "graphs", "backends", "errors", "_aliases"}
# A cycle inside backends/ (validation checks PreparedGraph, prepared validates edges), owned by the
# backends work; tolerated as exactly this pair until that work breaks it.
def package_modules(root: Path, name: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package at ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict) -> list[str]:
    """The package modules one import statement loads (a name imported from a package is its
    submodule when one exists, else the package itself)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix for alias in node.names]
    found = []
    for name in names:
        while name and name not in modules:  # `import a.b.c` where c is an attribute
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(_imported(node, module, path.name == "__init__.py", modules))
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, each as one cycle through it."""
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], [0]

    def visit(node):  # Tarjan's algorithm
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(component, graph) for component in components]


def _cycle_through(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """One import cycle inside a strongly connected component: a -> b -> ... -> a."""
    start = min(component)
    path, seen = [start], {start}
    while True:
        successor = min(s for s in graph[path[-1]] if s in component)
        if successor in seen:
            return path[path.index(successor):] + [successor]
        path.append(successor)
        seen.add(successor)


def folder(module: str) -> str:
    """The top-level folder (or root module) of a package module: ``gnn_transformer.core.model`` -> ``core``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imported in sorted(graph.items()):
        layer = folder(module)
        for target in sorted(imported):
            to = folder(target)
            if layer in ("graphs", "backends") and (to in ABOVE_CORE or to == ""):
                problems.append(f"{module} -> {target}: graphs/ and backends/ sit below the core")
            elif layer == "core" and to not in CORE_MAY_IMPORT:
                problems.append(f"{module} -> {target}: the core imports only graphs/ and backends/")
            elif layer in ("variants", "convert") and (to in APPS or to in ("analysis", "")):
                problems.append(f"{module} -> {target}: variants/ and convert/ import neither analysis/ nor the apps")
            elif to == "cli" and layer not in ("cli", "__main__"):
                problems.append(f"{module} -> {target}: only cli/ imports cli/")
    return problems


@pytest.fixture(scope="module")
def graph():
    return import_graph(package_modules(PACKAGE, "gnn_transformer"))


def test_the_package_has_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


def test_dependencies_point_one_way(graph):
    assert len(graph) > 50 and graph["gnn_transformer.core.model"]  # the source was read
    problems = layering_violations(graph)
    assert not problems, "\n".join(problems)


def test_only_the_command_line_parses_arguments_and_prints():
    offenders = []
    for module, path in package_modules(PACKAGE, "gnn_transformer").items():
        if folder(module) == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{module}:{node.lineno} prints")
            if isinstance(node, (ast.Import, ast.ImportFrom)) and "argparse" in (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]):
                offenders.append(f"{module}:{node.lineno} imports argparse")
    assert not offenders, "\n".join(offenders)


def test_the_checks_find_cycles_through_function_level_imports_and_wrong_directions(tmp_path):
    """The helpers above on a package made for the purpose: they can fail."""
    root = tmp_path / "pkg"
    for name, source in {
        "__init__.py": "",
        "graphs/__init__.py": "",
        "graphs/builders.py": "from ..core import model\n",  # upwards
        "core/__init__.py": "from .model import Model\n",
        "core/model.py": "from ..graphs import builders\n\ndef later():\n    from . import helper\n",
        "core/helper.py": "import pkg.core.model\n",  # back to model: a cycle through a function-level import
        "tasks/__init__.py": "from ..cli import run\n",
        "cli/__init__.py": "def run():\n    pass\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(source))
    toy = import_graph(package_modules(root, "pkg"))
    assert toy["pkg.core.model"] == {"pkg.graphs.builders", "pkg.core.helper"}
    (cycle,) = cycles(toy)
    assert set(cycle) == {"pkg.graphs.builders", "pkg.core.model", "pkg.core.helper"} or \
        set(cycle) == {"pkg.core.model", "pkg.core.helper"}  # one cycle through the component
    assert cycle[0] == cycle[-1] and all(b in toy[a] for a, b in zip(cycle, cycle[1:]))
    problems = layering_violations(toy)
    assert any(p.startswith("pkg.graphs.builders -> pkg.core") for p in problems)
    assert any(p.startswith("pkg.tasks -> pkg.cli") for p in problems)


def _fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_loads_the_core_alone():
    loaded = _fresh("import sys, gnn_transformer\n"
                    "print(' '.join(sorted(m for m in sys.modules if m.startswith('gnn_transformer.'))))").split()
    assert "gnn_transformer.core.model" in loaded
    above = sorted(m for m in loaded if folder(m) in ABOVE_CORE - {"core"})
    assert not above, f"import gnn_transformer loads {above}"


OLD_PATHS = {"attention": "core.attention", "prepared": "backends.prepared", "functional": "core.functional",
             "patterns": "graphs.patterns", "recording": "analysis.recording", "viz": "analysis.viz",
             "biases": "variants.biases", "demo": "tasks.demo"}


@pytest.mark.parametrize("old_first", [True, False])
def test_old_flat_paths_are_the_new_modules(old_first):
    pairs = [(f"gnn_transformer.{old}", f"gnn_transformer.{new}") for old, new in OLD_PATHS.items()]
    order = "[(a, b) for a, b in pairs]" if old_first else "[(b, a) for a, b in pairs]"
    same = _fresh(textwrap.dedent(f"""
        import importlib
        pairs = {pairs!r}
        for first, second in {order}:
            one = importlib.import_module(first)
            assert importlib.import_module(second) is one, (first, second)
        from gnn_transformer.prepared import PreparedGraph
        from gnn_transformer.backends.prepared import PreparedGraph as New
        assert PreparedGraph is New
        print("same")
    """))
    assert same.strip() == "same"
    for old, new in OLD_PATHS.items():  # and in this process, whatever was imported before
        assert importlib.import_module(f"gnn_transformer.{old}") is importlib.import_module(f"gnn_transformer.{new}")


# ---- tools depend on the model interface, not on model classes ---------------------------------------------

TOOLS = ("generation", "analysis/recording.py", "explain", "explorer")
MODEL_FILES = ("core/model.py", "variants", "convert/hf")
# attributes that only some model classes have: reading them is a class test in disguise
CLASS_TAGS = {"graph_for", "decodes_causally", "generator", "src_embed", "tgt_embed", "transformer"}


def _model_classes() -> set[str]:
    """Every class defined where models (and their parts) are: the paper's models, the variants, the imports."""
    names = set()
    for part in MODEL_FILES:
        root = PACKAGE / part
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            names |= {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)}
    return names


def _named(node: ast.AST) -> set[str]:
    """Names and attribute names inside an expression (``(a.B, C)`` -> ``{"a", "B", "C"}``)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _is_type_call(node: ast.AST) -> bool:
    call = node.value if isinstance(node, ast.Attribute) else node  # type(x) or type(x).__name__
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "type"


def class_tests(source: str, classes: set[str]) -> list[str]:
    """Where code decides by a model's class: ``isinstance``/``issubclass`` against a model class,
    ``type(x) is ...`` / ``type(x).__name__ == ...`` comparisons, and class-specific attributes."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
            hit = _named(node.args[1]) & classes
            if hit:
                found.append(f"line {node.lineno}: {node.func.id}(..., {sorted(hit)})")
        elif isinstance(node, ast.Compare) and any(_is_type_call(side) for side in [node.left, *node.comparators]):
            found.append(f"line {node.lineno}: compares type(...)")
        elif isinstance(node, ast.Attribute) and node.attr in CLASS_TAGS:
            found.append(f"line {node.lineno}: reads .{node.attr}")
    return found


@pytest.mark.parametrize("tool", TOOLS)
def test_no_tool_tests_a_models_class_to_decide_what_to_do(tool):
    """Generation, recording, explain and the explorer ask the model through core.interface."""
    classes = _model_classes()
    assert {"GraphTransformerModel", "GraphSequenceModel", "GraphT5ForConditionalGeneration",
            "GraphVariantModel"} <= classes
    root = PACKAGE / tool
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    assert files
    for path in files:
        assert class_tests(path.read_text(), classes) == [], path.relative_to(PACKAGE)


@pytest.mark.parametrize("code", [
    "if isinstance(model, GraphTransformerModel): pass",
    "ok = isinstance(model, (str, hf.GraphBertForMaskedLM))",
    "if type(model).__name__ == 'GraphDecoderModel': pass",
    "if type(model) is M: pass",
    "device = model.generator.weight.device",
    "edges = model.graph_for(lengths)",
])
def test_the_class_check_finds_each_kind_of_class_test(code):
    assert len(class_tests(code, _model_classes())) == 1
    assert class_tests("if isinstance(x, (str, Path)): pass\nname = type(model).__name__", _model_classes()) == []
