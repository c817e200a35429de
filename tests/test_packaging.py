"""The package imports only what it declares: a dependency that happens to be installed here
(pulled in by the test tools) must not be one the proxy needs on a fresh machine."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import shlex
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
                             + project["optional-dependencies"]["brotli"]
                             + project["optional-dependencies"]["zstd"])
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
    """uvloop, brotli and zstandard are extras: every import of them sits in a try/except
    ImportError."""
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
            if names & {"uvloop", "brotli", "zstandard"}:
                assert id(node) in guarded, f"{path}:{node.lineno} imports an extra unguarded"


def _readme_test_command() -> str:
    spec = importlib.util.spec_from_file_location("readme_commands",
                                                  ROOT / ".ci" / "readme_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.quick_start((ROOT / "README.md").read_text(encoding="utf-8"))[1])


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_requirements(command: str) -> tuple[set[str], set[str]]:
    """(every distribution the README's test command asks for, directly or through an extra
    of a project it installs; the names of those local projects)."""
    projects: dict[str, tuple[dict[str, object], set[str]]] = {}
    for word in shlex.split(command.split("&&")[0]):
        match = re.fullmatch(r"([./][^\[]*)(?:\[(.*)\])?", word)
        if match:
            data = tomllib.loads((ROOT / match.group(1) / "pyproject.toml").read_text())
            project = data["project"]
            extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
            projects[_normalize(project["name"])] = (project, extras)
    declared: set[str] = set()
    pending = [(name, extras) for name, (_, extras) in projects.items()]
    seen: set[tuple[str, str]] = set()
    while pending:
        name, extras = pending.pop()
        project = projects[name][0]
        requirements = list(project.get("dependencies", []))  # type: ignore[call-overload]
        for extra in extras:
            if (name, extra) not in seen:
                seen.add((name, extra))
                requirements += project["optional-dependencies"][extra]  # type: ignore[index]
        for requirement in requirements:
            match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", requirement)
            assert match is not None, requirement
            dependency = _normalize(match.group(1))
            declared.add(dependency)
            if dependency in projects:
                pending.append((dependency, {e.strip() for e in
                                             (match.group(2) or "").split(",") if e.strip()}))
    return declared, set(projects)


def test_every_test_import_is_declared_by_an_extra_the_readme_installs():
    """A test module that imports a package no installed [test] extra declares passes only on a
    machine where someone installed it by hand (jsonschema once did)."""
    declared, local_projects = _installed_requirements(_readme_test_command())
    assert {"nectoproxy", "nectoproxy-plugin-har", "nectoproxy-plugin-rules",
            "nectoproxy-plugin-throttle", "nectoproxy-plugin-example"} <= local_projects
    sources = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "examples").rglob("*.py"),
               *ROOT.glob("plugins/*/tests/*.py"), *ROOT.glob("plugins/*/*/*.py")]
    local = {p.stem for p in sources} | {p.name for p in ROOT.glob("plugins/*/*") if p.is_dir()}
    local |= {"nectoproxy", "__future__", "conftest"}
    # Benchmark scripts, which their tests import from benchmarks/ (on sys.path): their own
    # imports are tested by those tests running.
    local |= {p.stem for p in ROOT.glob("benchmarks/*.py")}
    providers = importlib.metadata.packages_distributions()
    undeclared: dict[str, list[str]] = {}
    for path in sources:
        for module in sorted(_imports(path) - local - set(sys.stdlib_module_names)):
            distributions = {_normalize(d) for d in providers.get(module, [])}
            if not distributions & declared:
                undeclared.setdefault(str(path.relative_to(ROOT)), []).append(module)
    assert undeclared == {}, (
        f"test modules import packages that no [test] extra the README installs declares: "
        f"{undeclared}")
