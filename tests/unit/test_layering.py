"""Imports flow lsp -> decoding -> monitors, models, never back (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "models": {"lsp", "decoding", "monitors"},
    "monitors": {"lsp", "decoding", "models"},
    "decoding": {"lsp"},
    "lsp": set(),
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found for {package}"
    bad = {f"{f.relative_to(ROOT)} imports {name}" for f in files for name in _imported_packages(f) & FORBIDDEN[package]}
    assert not bad, sorted(bad)


def test_only_models_touches_onnxruntime() -> None:
    for package in ("lsp", "decoding", "monitors"):
        for f in (ROOT / package).rglob("*.py"):
            assert "onnxruntime" not in _imported_packages(f), f
