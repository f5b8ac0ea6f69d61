"""Imports point down: core → run layer → tools → commands, and the tools never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_train"
CORE = {"data", "models", "algorithms", "losses", "calibration", "errors", "io", "speed"}
RUN = {"run", "cli"}
TOOLS = {"export", "evaluation", "audit", "monitor", "sweep"}


def layer(part: str) -> str:
    if part in CORE:
        return "core"
    if part in RUN:
        return "run"
    return "tool" if part in TOOLS else "command"


def imported_parts(path: Path) -> set[str]:
    """The top-level ssl_train parts (`run`, `export`, `losses`, ...) a module imports, at any depth."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        if isinstance(node, ast.ImportFrom) and node.module == "ssl_train":
            names = [f"ssl_train.{a.name}" for a in node.names]
        parts |= {n.split(".")[1] for n in names if n.startswith("ssl_train.")}
    return parts


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem not in ("__init__",))
RANK = {"core": 0, "run": 1, "tool": 2, "command": 3}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_and_tools_stay_apart(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    for part in imported_parts(path) - {own}:
        assert RANK[layer(part)] < RANK[layer(own)] or (layer(part) == layer(own) != "tool"), (
            f"{path.relative_to(PACKAGE)} ({layer(own)}) imports ssl_train.{part} ({layer(part)})")
