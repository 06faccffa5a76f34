"""The core's modules import each other without cycles (counting imports inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ADAPTER = Path(__file__).resolve().parents[2] / "adapter"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(ADAPTER.rglob("*.py")):
        module = ".".join(path.relative_to(ADAPTER.parent).with_suffix("").parts).removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module] = {m for m in found if m.startswith("adapter")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done or module not in graph:
            return None
        for dep in sorted(graph[module]):
            if (found := walk(dep, [*path, module])) is not None:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        if (found := walk(module, [])) is not None:
            return found
    return None


def test_no_import_cycle_in_adapter() -> None:
    graph = _graph()
    assert "adapter.samples" in graph and "adapter.cli" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_checker_finds_a_cycle() -> None:
    assert _cycle({"adapter.cli": {"adapter.demo"}, "adapter.demo": {"adapter.cli"}}) == [
        "adapter.cli", "adapter.demo", "adapter.cli"]
