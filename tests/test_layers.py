"""The package's rooms and their one-way flow: no import cycle, no import from a lower layer into a higher one.

Reads every module of ``kalshictl`` with :mod:`ast` (nothing is imported) and follows its imports of ``kalshictl``,
at module level and inside functions alike; imports under ``if TYPE_CHECKING:`` are annotations only and never run,
so they are left out. The layers are written here and drawn in docs/architecture.md; a test keeps the two equal.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kalshictl"

# Top to bottom. A room may import its own layer's rooms and any lower layer's, never a higher one.
# A room is a first-level subpackage or module of kalshictl; "kalshictl" is the package's own __init__.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry", ("__main__", "cli")),
    ("local", ("local",)),
    ("operations", ("ops",)),
    ("composed services", ("replay",)),
    ("services", ("gatherer", "dedup", "research", "sim")),
    ("configuration", ("config",)),
    ("libraries", ("db", "health", "kalshi", "secrets")),
    ("foundation", ("backoff", "clock", "errors", "logs", "schema", "units", "kalshictl")),
)
LAYER_OF = {room: depth for depth, (_, rooms) in enumerate(LAYERS) for room in rooms}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported kalshictl module (the longest existing module of the dotted name)
    line: int
    in_function: bool

    def where(self) -> str:
        kind = "function-level" if self.in_function else "module-level"
        return f"{self.source.replace('.', '/')}.py:{self.line} imports {self.target} ({kind})"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kalshictl"


def _resolve(name: str, modules: dict[str, Path]) -> str:
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, modules: dict[str, Path], text: str | None = None) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "kalshictl" or alias.name.startswith("kalshictl."):
                    found.append(Import(module, _resolve(alias.name, modules), node.lineno, in_function))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name == "kalshictl" or name.startswith("kalshictl."):
                for alias in node.names:
                    target = _resolve(f"{name}.{alias.name}", modules)
                    found.append(Import(module, target, node.lineno, in_function))
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(path.read_text() if text is None else text, str(path)), False)
    return list(dict.fromkeys(imp for imp in found if imp.target != module))  # `from m import a, b`: one import


def _graph() -> tuple[dict[str, Path], list[Import]]:
    modules = _modules()
    return modules, [imp for module, path in sorted(modules.items()) for imp in _imports(module, path, modules)]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_every_room_has_a_layer():
    modules, _ = _graph()
    rooms = {room(m) for m in modules}
    assert sorted(rooms - set(LAYER_OF)) == [], "place these rooms in LAYERS and docs/architecture.md"
    assert sorted(set(LAYER_OF) - rooms) == [], "LAYERS names rooms that no longer exist"


def test_no_import_from_a_lower_layer_into_a_higher_one():
    _, imports = _graph()
    imports = [i for i in imports if room(i.source) in LAYER_OF and room(i.target) in LAYER_OF]  # others: see above
    upward = [
        f"{imp.where()}: {room(imp.source)} ({LAYERS[LAYER_OF[room(imp.source)]][0]}) may not import "
        f"{room(imp.target)} ({LAYERS[LAYER_OF[room(imp.target)]][0]})"
        for imp in imports
        if LAYER_OF[room(imp.target)] < LAYER_OF[room(imp.source)]
    ]
    assert upward == [], "\n".join(upward)


def test_no_import_cycle_between_modules():
    _, imports = _graph()
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        edges[imp.source].add(imp.target)
    cycles = _cycles(edges)
    detail = [
        "cycle: " + " <-> ".join(c) + "\n  " + "\n  ".join(i.where() for i in imports if {i.source, i.target} <= set(c))
        for c in cycles
    ]
    assert cycles == [], "\n".join(detail)


def test_no_import_cycle_between_rooms():
    _, imports = _graph()
    crossing = [i for i in imports if room(i.source) != room(i.target)]
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in crossing:
        edges[room(imp.source)].add(room(imp.target))
    cycles = _cycles(edges)
    detail = [
        "cycle: " + " <-> ".join(c) + "\n  "
        + "\n  ".join(i.where() for i in crossing if room(i.source) in c and room(i.target) in c)
        for c in cycles
    ]  # fmt: skip
    assert cycles == [], "\n".join(detail)


def test_the_checks_see_cycles_and_upward_imports():
    """The graph walk is not blind: known imports are found, and a cycle is reported."""
    _, imports = _graph()
    pairs = {(i.source, i.target, i.in_function) for i in imports}
    assert ("kalshictl.cli.demo", "kalshictl.local.demo", True) in pairs  # inside the command function
    assert ("kalshictl.local.demo", "kalshictl.local.pipeline", False) in pairs
    assert not any(
        i.target == "kalshictl.config" and i.source == "kalshictl.db.connect" for i in imports
    )  # TYPE_CHECKING
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_docs_architecture_lists_the_same_layers():
    """docs/architecture.md's table (``| n | layer | `cli/`, `__main__.py` | ...``) names the same layers and rooms."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", text, re.MULTILINE)
    documented = tuple(
        (name, tuple("kalshictl" if r == "__init__" else r for r in re.findall(r"`([\w]+)(?:/|\.py)`", rooms)))
        for _, name, rooms in rows
    )
    assert documented == LAYERS, "docs/architecture.md's layer table differs from LAYERS in tests/test_layers.py"
