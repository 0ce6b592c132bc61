"""The folders are layers that import only downward (docs/architecture.md); this scan keeps them so."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "servers", "traces")
# Lowest first; a module may import its own layer and the ones below. The top layer may import anything.
LAYERS = (
    ("harness.core",),
    ("traces",),
    ("harness.dispatch", "harness.sim", "harness.measure"),
    ("servers",),
)
# Below the CLI no module may know option names or the live orchestration.
PURE = ("harness.core", "harness.dispatch", "harness.sim", "harness.measure")
NOT_FROM_PURE = ("servers", "harness.live", "harness.cli", "harness.report", "harness.allocate", "argparse")


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if _under(module, prefixes):
            return i
    return len(LAYERS)


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path
    yield "harness.kairos_load", ROOT / "harness" / "kairos_load.py"


def _imports(module: str, path: Path):
    """(imported module, line, inside a function?) for every import statement of the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [base]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) in in_function


SCANNED = list(_modules())


@pytest.mark.parametrize("module,path", SCANNED, ids=[m for m, _ in SCANNED])
def test_imports_run_only_downward(module, path):
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for name, line, _ in _imports(module, path)
        if _under(name, PACKAGES) and _layer(name) > _layer(module)
    ]
    if _under(module, PURE):
        upward += [
            f"{path.relative_to(ROOT)}:{line} imports {name}"
            for name, line, _ in _imports(module, path)
            if _under(name, NOT_FROM_PURE)
        ]
    assert not upward


@pytest.mark.parametrize("module,path", SCANNED, ids=[m for m, _ in SCANNED])
def test_no_project_import_hides_inside_a_function(module, path):
    hidden = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for name, line, inside in _imports(module, path)
        if inside and _under(name, PACKAGES)
    ]
    assert not hidden


def test_the_scan_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from servers.pool import PoolSpec\n\ndef f():\n    from harness.cli import main\n")
    found = list(_imports("harness.core.bad", bad))
    assert ("servers.pool", 1, False) in found and ("harness.cli", 4, True) in found
    assert _layer("servers.pool") > _layer("harness.core.bad")
