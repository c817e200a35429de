"""The package imports only what it declares: a dependency that happens to be installed here
(pulled in by the test tools) must not be one the proxy needs on a fresh machine."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Distribution name -> the module it is imported as, where the two differ.
IMPORT_NAMES = {"tomli-w": "tomli_w"}


def _module_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert name is not None, requirement
        names.add(IMPORT_NAMES.get(name.group().lower(), name.group().lower()))
    return names


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_engine_imports_only_declared_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = _module_names(project["dependencies"])
    optional = _module_names(project["optional-dependencies"]["fast"]
                             + project["optional-dependencies"]["brotli"])
    allowed = required | set(sys.stdlib_module_names) | {"nectoproxy", "__future__"}
    # nectoproxy.testing is the pytest plugin: it runs only where the test extra is installed.
    sources = [p for p in (ROOT / "nectoproxy").rglob("*.py") if "testing" not in p.parts]
    assert len(sources) > 10
    undeclared = {}
    for path in sources:
        extra = _imports(path) - allowed
        if extra - optional:
            undeclared[str(path.relative_to(ROOT))] = sorted(extra - optional)
    assert undeclared == {}, f"imports that pyproject.toml does not declare: {undeclared}"


def test_optional_modules_are_imported_only_where_their_absence_is_handled():
    """uvloop and brotli are extras: every import of them sits in a try/except ImportError."""
    for path in (ROOT / "nectoproxy").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                                   "ModuleNotFoundError")
                    for h in node.handlers):
                guarded.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module.split(".")[0]}
            else:
                continue
            if names & {"uvloop", "brotli"}:
                assert id(node) in guarded, f"{path}:{node.lineno} imports an extra unguarded"
