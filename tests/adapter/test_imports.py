"""The core's modules import each other without cycles (counting imports inside functions;
not those under `if TYPE_CHECKING:`, which never run)."""

from __future__ import annotations

import ast
from pathlib import Path

ADAPTER = Path(__file__).resolve().parents[2] / "adapter"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(ADAPTER.rglob("*.py")):
        module = ".".join(path.relative_to(ADAPTER.parent).with_suffix("").parts).removesuffix(".__init__")
        found: set[str] = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
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
