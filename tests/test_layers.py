"""The layering docs/architecture.md draws: imports go down (the library never imports the CLI), no
two modules import each other (not even inside functions), and each verb stays a thin layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "macs_cli"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the macs_cli modules it imports anywhere in its text (function bodies included)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, f in mods.items():
        package = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package[:len(package) - node.level + 1] + ([node.module] if node.module else [])
            elif (node.module or "").startswith("macs_cli"):
                base = node.module.split(".")
            else:
                continue
            target = ".".join(base)
            found = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods] or [target]
            for t in found:
                while t not in mods:
                    t = t.rsplit(".", 1)[0]
                if t != name and not name.startswith(t + ".") and t != "macs_cli":
                    graph[name].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_and_the_library_never_imports_the_cli():
    mods = _modules()
    graph = _imports(mods)
    assert graph["macs_cli.cli.separate"] >= {"macs_cli.cli.batch", "macs_cli.separation.api"}   # it sees imports
    assert _cycles(graph) == []
    upward = {m: sorted(t for t in ts if t.startswith("macs_cli.cli")) for m, ts in graph.items()
              if not m.startswith("macs_cli.cli") and m != "macs_cli.__main__"}
    assert {m: t for m, t in upward.items() if t} == {}


def _logic_lines(path: Path, name: str) -> int:
    """A function's lines less its docstring, imports, comments and blank lines."""
    src = path.read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == name)
    skip = set()
    for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip |= set(range(node.lineno, node.end_lineno + 1))
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        skip |= set(range(first.lineno, first.end_lineno + 1))
    lines = src.splitlines()
    return sum(1 for i in range(first.lineno, fn.end_lineno + 1)
               if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


@pytest.mark.parametrize("module,name", [("separate", "separate"), ("embed", "embed"), ("rank", "rank"),
                                         ("generate", "generate"), ("eval", "evaluate")])
def test_each_verb_is_a_thin_layer(module, name):
    assert _logic_lines(PKG / "cli" / f"{module}.py", name) <= 45
