"""kalshictl.kalshi.messages is the parser's public face: every name imported from it is exported explicitly and is the
very object of the module that defines it (records, values, parser); the parts import one way."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from kalshictl.kalshi import messages

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("records", "values", "fields", "fast_path", "reference", "parser")
# Each part may import only the parts before it in this order (fast_path and reference are independent).
ORDER = {"records": 0, "values": 0, "fields": 1, "fast_path": 2, "reference": 2, "parser": 3, "messages": 4}


def _imports_from(module: str) -> dict[str, set[str]]:
    """Name -> files, for every ``from <module> import name`` in kalshictl, tests and bench."""
    found: dict[str, set[str]] = {}
    for top in ("kalshictl", "tests", "bench"):
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module == module:
                    for alias in node.names:
                        found.setdefault(alias.name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_name_is_exported() -> None:
    used = _imports_from("kalshictl.kalshi.messages")
    assert used, "nothing imports kalshictl.kalshi.messages: the scan is broken"
    missing = {name: sorted(files) for name, files in used.items() if name not in messages.__all__}
    assert not missing, f"imported from kalshictl.kalshi.messages but not in its __all__: {missing}"


def test_exports_are_the_defining_modules_objects() -> None:
    assert len(set(messages.__all__)) == len(messages.__all__)
    for name in messages.__all__:
        obj = getattr(messages, name)
        modules = [importlib.import_module(f"kalshictl.kalshi.{part}") for part in PARTS]
        homes = [module for module in modules if getattr(module, name, None) is obj]
        assert homes, f"{name}: not defined in any of {PARTS}"


def test_parts_import_one_way() -> None:
    for part, rank in ORDER.items():
        tree = ast.parse((ROOT / "kalshictl" / "kalshi" / f"{part}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kalshictl.kalshi."):
                other = node.module.rsplit(".", 1)[1]
                if other in ORDER:
                    assert ORDER[other] < rank, f"kalshi/{part}.py imports kalshi/{other}.py against the order"
            if isinstance(node, ast.ImportFrom) and node.module == "kalshictl.kalshi":
                for alias in node.names:
                    if alias.name in ORDER:
                        assert ORDER[alias.name] < rank, f"kalshi/{part}.py imports kalshi/{alias.name}.py"
