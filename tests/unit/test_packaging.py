"""pyproject.toml declares what the library imports; requirements.txt (the lock) fits it."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _third_party_imports(folder: Path) -> set[str]:
    """Top-level module names imported anywhere under ``folder`` that are not stdlib or fvc."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in {"fvc", "__future__"}}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def test_every_library_import_is_a_declared_dependency() -> None:
    declared = {_norm(Requirement(r).name) for r in _project()["dependencies"]}
    dists = packages_distributions()
    imports = _third_party_imports(REPO / "src" / "fvc")
    assert {"torch", "av", "pandas"} <= imports, imports  # the scan itself works
    missing = {
        m: dists.get(m) for m in imports if not {_norm(d) for d in dists.get(m, [m])} & declared
    }
    assert not missing, f"imported by src/fvc but not in [project.dependencies]: {missing}"


def test_lock_satisfies_the_declared_ranges() -> None:
    lock = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            lock[_norm(name)] = version.strip()
    project = _project()
    reqs = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    for text in reqs:
        req = Requirement(text)
        pinned = lock.get(_norm(req.name))
        assert pinned is not None, f"{req.name} is declared but not locked in requirements.txt"
        assert req.specifier.contains(pinned), (
            f"requirements.txt pins {req.name}=={pinned}, outside {req}"
        )
