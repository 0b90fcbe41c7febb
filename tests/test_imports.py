"""The package's import graph, derived from the source (an AST walk, imports inside functions
included): no module imports itself round a cycle, and lower layers never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "stage"

# Layers, lowest first; a package may import its own layer or lower ones only. Top-level helper
# modules (errors, files, formats, configs, audio, devices, text) sit below everything that uses them.
LAYERS = [
    {"stage.errors", "stage.files", "stage.formats", "stage.configs"},
    {"stage.audio", "stage.devices", "stage.threads"},
    {"stage.text", "stage.tokens"},
    {"stage.model"},
    {"stage.data", "stage.eval", "stage.generate"},
    {"stage.train", "stage.app"},
    {"stage.cli", "stage"},
]
# Known upward edges, each with the issue that removes it. The test fails when one disappears
# too, so this list cannot go stale. (Issue 11 removed the last ones: model -> generate and
# model -> data, when `StageModel.generate` moved into generate/pipeline.py.)
KNOWN_UPWARD: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines under `if TYPE_CHECKING:` (annotations only, never executed)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, source: str, modules) -> set[str]:
    """The package modules that module `name` (its text: `source`) imports, at the top or inside
    a function, but not under `if TYPE_CHECKING:`."""
    tree = ast.parse(source, name)
    skip = type_checking_lines(tree)
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from stage.x import name` -> stage.x
                target = target.rpartition(".")[0]
            if target and target not in (name, "stage"):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports_of(name, path.read_text(), modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def package(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and (ROOT / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def layer_of(pkg: str) -> int:
    for i, layer in enumerate(LAYERS):
        if pkg in layer:
            return i
    raise AssertionError(f"{pkg} is in no layer of tests/test_imports.py: place it")


def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "stage.tokens.codec" in graph["stage.model.sources"]
    assert "stage.errors" in graph["stage.tokens.config"]


def test_no_module_cycles():
    assert cycles(import_graph()) == []


def upward_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(package, higher package) for every import of a higher layer."""
    upward = set()
    for module, targets in graph.items():
        for target in targets:
            a, b = package(module), package(target)
            if a != b and layer_of(b) > layer_of(a):
                upward.add((a, b))
    return upward


def test_lower_layers_never_import_higher_ones():
    upward = upward_edges(import_graph())
    assert upward - KNOWN_UPWARD == set(), "new upward imports"
    assert KNOWN_UPWARD - upward == set(), "fixed: remove it from KNOWN_UPWARD"


def test_a_model_to_generate_import_is_refused():
    """The model layer sits below generation: StageModel importing generate/ again, even lazily
    inside a method (as `StageModel.generate` once did), is an upward edge the test above fails on."""
    graph = import_graph()
    path = ROOT / "model" / "stage_model.py"
    lazy = path.read_text() + (
        "\n\ndef generate(model, *args):\n"
        "    from stage.generate.pipeline import generate_stems\n\n"
        "    return generate_stems(model, *args)\n"
    )
    graph["stage.model.stage_model"] = imports_of("stage.model.stage_model", lazy, graph)
    assert ("stage.model", "stage.generate") in upward_edges(graph) - KNOWN_UPWARD
    assert "stage.generate.pipeline" in graph["stage.model.stage_model"]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
