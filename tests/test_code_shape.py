"""The shape the code keeps (issue 28): no function over 80 lines, no class over 300, no
import cycle between servicelab's packages and top-level modules. Read from the source
with `ast`, so a change that breaks one of them fails here with the place to split."""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "servicelab"
MAX_FUNCTION = 80
MAX_CLASS = 300


def sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield module.removesuffix(".__init__"), ast.parse(path.read_text(encoding="utf-8"))


def test_no_function_or_class_is_too_long() -> None:
    too_long = []
    for module, tree in sources():
        for node in ast.walk(tree):
            limit = (
                MAX_FUNCTION
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                else MAX_CLASS
                if isinstance(node, ast.ClassDef)
                else None
            )
            if limit is None:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                too_long.append(f"{module}.{node.name}: {lines} lines (at most {limit})")
    assert not too_long, too_long


def unit(module: str) -> str:
    """A module's package (its folder: `servicelab.models.server` is a package of its own);
    a top-level module is a unit of its own."""
    parts = module.split(".")
    while len(parts) > 2 and not ROOT.joinpath(*parts).is_dir():
        parts.pop()
    return ".".join(parts[:2]) if len(parts) == 2 else ".".join(parts)


def imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, tree in sources():
        source = unit(module)
        for name in imports(tree):
            if not name.startswith("servicelab"):
                continue
            target = unit(name)
            # A package's modules may import its parents (how packages re-export).
            if target != source and not source.startswith(target + "."):
                edges[source].add(target)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            for there in edges.get(here, ()):
                if there == goal:
                    return True
                if there not in seen:
                    seen.add(there)
                    todo.append(there)
        return False

    cycles = sorted(f"{a} -> {b}" for a in edges for b in edges[a] if reaches(b, a))
    assert not cycles, cycles
