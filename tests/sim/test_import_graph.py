"""The local exchange's modules (and the replay's, which composes them) import one another without a cycle, counting
imports under ``if TYPE_CHECKING:`` too: each handler depends on the narrow protocol it declares
(``kalshictl/sim/world.py``, the ``Protocol`` classes of ``rest.py`` and ``control.py``), never on ``SimExchange``
(docs/sim.md, "Structure"). Read with :mod:`ast`: nothing is imported.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kalshictl/sim", "kalshictl/replay")
HANDLERS = ("rest", "ws", "control", "history_rest", "connection", "feed", "subscriptions", "kalshi_http", "world")


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(module: str, text: str, modules: set[str]) -> set[str]:
    """Every module of ``modules`` that ``text`` imports anywhere (module level, functions, ``TYPE_CHECKING``)."""
    package = module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        found |= {n for n in names if n in modules and n != module}
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the sim/replay modules it imports."""
    paths = {_module(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).glob("*.py"))}
    return {m: _imported(m, p.read_text(), set(paths)) for m, p in paths.items()}


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``edges`` ([] if there is none)."""
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_sim_and_replay_import_graph_has_no_cycle_even_counting_type_checking_imports() -> None:
    edges = graph()
    assert "kalshictl.sim.exchange" in edges and "kalshictl.replay.server" in edges  # the walk found the modules
    assert cycle(edges) == [], "import cycle: " + " -> ".join(cycle(edges))


def test_no_handler_names_the_exchange() -> None:
    edges = graph()
    naming = sorted(m for name in HANDLERS if "kalshictl.sim.exchange" in edges[(m := f"kalshictl.sim.{name}")])
    assert naming == [], f"these depend on SimExchange instead of a protocol: {naming}"


def test_the_walk_sees_type_checking_and_function_level_imports() -> None:
    modules = {"kalshictl.sim.a", "kalshictl.sim.b", "kalshictl.sim.c"}
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from kalshictl.sim.b import X\n"
        "def f():\n    from . import c\n"
    )
    assert _imported("kalshictl.sim.a", text, modules) == {"kalshictl.sim.b", "kalshictl.sim.c"}
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) != []
    assert cycle({"a": {"b"}, "b": {"c"}}) == []
