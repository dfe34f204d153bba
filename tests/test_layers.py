"""The package's import structure: imports only go down the layers, nothing imports in a circle,
the pure math imports no trainer, tracker or tuner, and the analysis imports no training code.
Every import counts, at module level or inside a function (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "grpo_lab"
LAYERS = [  # lowest first; a module may import its own layer and those below
    ["grpo_lab", "grpo_lab.conventions", "grpo_lab.errors", "grpo_lab.imports", "grpo_lab.registry"],
    ["grpo_lab.config", "grpo_lab.core", "grpo_lab.evaluation", "grpo_lab.seeding", "grpo_lab.specs"],
    ["grpo_lab.models", "grpo_lab.tasks", "grpo_lab.analysis"],
    ["grpo_lab.rollout"],
    ["grpo_lab.methods"],
    ["grpo_lab.engine"],
    ["grpo_lab.runs"],
    ["grpo_lab.experiments", "grpo_lab.bench"],
    ["grpo_lab.demo"],
    ["grpo_lab.cli"],
]
ANALYSIS_MAY_IMPORT = ("grpo_lab.analysis", "grpo_lab.conventions", "grpo_lab.specs", "grpo_lab.config",
                       "grpo_lab.errors")
CORE_MAY_IMPORT = ("torch", "numpy", "math", "typing", "dataclasses", "__future__", "grpo_lab.core", "collections",
                   "functools", "importlib")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, by full dotted name (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def resolve(target: str, known: dict) -> str | None:
    """The package module `target` names (a module, or a name inside one), or None outside the package."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def layer(name: str) -> int:
    best = max((prefix for row in LAYERS for prefix in row if name == prefix or name.startswith(prefix + ".")),
               key=len)
    return next(i for i, row in enumerate(LAYERS) if best in row)


GRAPH = None


def graph() -> dict[str, set[str]]:
    global GRAPH
    if GRAPH is None:
        known = modules()
        GRAPH = {}
        for name, path in known.items():
            targets = {resolve(t, known) for t in imports(name, path) if t.startswith("grpo_lab")}
            GRAPH[name] = {t for t in targets if t and t != name}
    return GRAPH


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)  # raises StopIteration / ValueError for a module no layer holds


def test_imports_only_go_down():
    wrong = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
             for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(g):
        if start not in state and (circle := visit(start)):
            pytest.fail("import circle: " + " -> ".join(circle))


def test_core_imports_only_torch_and_the_standard_library():
    for name, path in modules().items():
        if name.startswith("grpo_lab.core"):
            bad = [t for t in imports(name, path) if not t.startswith(CORE_MAY_IMPORT)]
            assert not bad, f"{name} imports {bad}"


def test_analysis_imports_no_training_code():
    known = modules()
    for name, path in known.items():
        if name.startswith("grpo_lab.analysis"):
            bad = [t for t in imports(name, path) if t.startswith("grpo_lab") and not t.startswith(ANALYSIS_MAY_IMPORT)]
            bad += [t for t in imports(name, path) if t.split(".")[0] in ("torch", "lightning", "optuna")]
            assert not bad, f"{name} imports {bad}"


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {"grpo_lab.core.a": {"grpo_lab.engine.b"}, "grpo_lab.engine.b": {"grpo_lab.core.a"}}
        with pytest.raises(AssertionError, match="imports grpo_lab.engine.b"):
            test_imports_only_go_down()
        with pytest.raises(pytest.fail.Exception, match="import circle"):
            test_no_import_circles()
    finally:
        GRAPH = saved
