"""Every module of the project imports, and every third-party import is declared in pyproject.toml.

Modules are discovered by walking the packages (new modules are covered without editing this file);
a missing dependency fails with the module's name. Function-level imports (``import matplotlib``
inside a function) are not executed by importing, so the declaration test reads the source.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ovseg", "pipelines")
RUNTIME_DIRS = (*PACKAGES, "jobs")


def _package_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        for info in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}."):
            names.append(info.name)
    return sorted(names)


def _job_files() -> list[Path]:
    return sorted((REPO / "jobs").glob("*.py"))


@pytest.mark.parametrize("module", _package_modules())
def test_every_package_module_imports(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        pytest.fail(f"{module} does not import: {err} (missing dependency {err.name!r}?)")


@pytest.mark.parametrize("path", _job_files(), ids=lambda p: f"jobs/{p.name}")
def test_every_job_imports(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"_job_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as err:
        pytest.fail(f"jobs/{path.name} does not import: {err} (missing dependency {err.name!r}?)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_every_third_party_import_is_declared() -> None:
    """Catches a package installed by hand: imported by runtime code, absent from dependencies."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_norm(re.split(r"[\s\[<>=!~;(]", r.strip(), maxsplit=1)[0]) for r in project["dependencies"]}
    dists = packages_distributions()
    local = set(RUNTIME_DIRS)
    undeclared = []
    for folder in RUNTIME_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            for name in _imports(path) - local:
                if name in sys.stdlib_module_names or name == "__future__":
                    continue
                provided_by = {_norm(d) for d in dists.get(name, [name])}
                if not provided_by & declared:
                    undeclared.append(f"{name} (in {path.relative_to(REPO)})")
    assert not undeclared, "imports not declared in [project].dependencies: " + ", ".join(sorted(undeclared))


def _lockstep_mismatches(versions: dict[str, str | None]) -> list[str]:
    """Installed fsspec implementations whose release differs from fsspec's (they release in lockstep)."""
    base = versions["fsspec"]
    return [f"{name} {v} != fsspec {base}" for name, v in sorted(versions.items())
            if name != "fsspec" and v is not None and v != base]


def test_fsspec_implementations_match_the_fsspec_release() -> None:
    """s3fs (and gcsfs, when installed) must be the release of the installed fsspec: a resolver that
    settles on an old s3fs (0.4.2 from 2019 beside fsspec 2025) installs a broken S3 stack."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    versions = {name: installed(name) for name in ("fsspec", "s3fs", "gcsfs")}
    assert versions["fsspec"] is not None and versions["s3fs"] is not None  # both declared (dev / cloud)
    assert _lockstep_mismatches(versions) == []
    # the check itself fails on the 2019 resolution
    assert _lockstep_mismatches({"fsspec": "2025.9.0", "s3fs": "0.4.2", "gcsfs": None}) == [
        "s3fs 0.4.2 != fsspec 2025.9.0"]
