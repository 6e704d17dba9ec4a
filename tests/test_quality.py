"""Project-wide checks: lint, types, layering and the runnable examples in docstrings."""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import corral

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "corral"

# Lower number = lower layer. A module may import only from its own layer or a lower one.
LAYERS = {
    "_errors": 0,
    "_config": 0,
    "durable": 1,
    "models": 2,
    "tools": 3,
    "guards": 3,
    "sandbox": 3,
    "agents": 4,
    "apps": 5,
}


def _layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "corral" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def _imported_names(path: Path) -> list[str]:
    """Every dotted name an absolute import reaches: the module, and the module plus each name taken from it
    (``from corral.apps.data_agent import _run`` reaches ``corral.apps.data_agent._run``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_imports_point_down_the_layers() -> None:
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        own = _layer_of(".".join(rel.parts))
        if own is None:
            continue
        for imported in _imported_names(path):
            other = _layer_of(imported)
            if other is not None and other > own:
                violations.append(f"{rel} imports {imported}")
    assert not violations, "imports must point down the layers:\n" + "\n".join(violations)


def private_reach(importer_package: str, imported: str) -> str | None:
    """The private part ``imported`` reaches into from outside the package that owns it, or ``None``."""
    parts = imported.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:i])
            inside = importer_package == owner or importer_package.startswith(owner + ".")
            return None if inside else ".".join(parts[: i + 1])
    return None


def test_the_private_reach_check_finds_a_reach_and_only_that() -> None:
    assert (
        private_reach("corral.apps.cli", "corral.apps.data_agent._run.ask") == "corral.apps.data_agent._run"
    )
    assert private_reach("corral.apps.cli", "corral.apps.data_agent._run") == "corral.apps.data_agent._run"
    assert private_reach("corral.apps.data_agent", "corral.apps.data_agent._run.ask") is None
    assert private_reach("corral.apps.data_agent", "corral.models") is None
    assert private_reach("corral.models", "corral._config.get_setting") is None  # corral's own: all inside
    assert private_reach("corral.models", "corral.durable.__version__") is None  # dunder names are public


def test_no_module_reaches_into_another_packages_private_modules() -> None:
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        package = ".".join(rel.parts[:-1])  # a module's package; for __init__.py, the package itself
        for imported in _imported_names(path):
            if imported.startswith("corral.") and (reached := private_reach(package, imported)):
                violations.append(f"{rel} imports {reached}")
    assert not violations, "use the package's public names:\n" + "\n".join(sorted(set(violations)))


def _all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(corral.__path__, "corral.")]


@pytest.mark.parametrize("name", _all_modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: install the dev extra (pip install -e '.[dev]')")
    return found


def test_ruff_lint_is_clean() -> None:
    proc = subprocess.run(
        [_tool("ruff"), "check", "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean() -> None:
    proc = subprocess.run(
        [_tool("ruff"), "format", "--check", "src", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


PUBLIC_PACKAGES = [
    "corral",
    "corral.durable",
    "corral.models",
    "corral.tools",
    "corral.guards",
    "corral.sandbox",
    "corral.agents",
    "corral.agents.workflow",
    "corral.apps.data_agent",
]


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_public_names_are_exported_once_and_resolve(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"
    public = {
        n for n in vars(module) if not n.startswith("_") and not isinstance(getattr(module, n), type(ast))
    }
    unlisted = sorted(public - set(exported) - {"annotations"})
    assert not unlisted, f"{name} has public names missing from __all__: {unlisted}"
