"""tests/service: blogsvc, a service on harbordb, passes its own suite and mypy --strict.

Its suite runs as a service's would (``pytest`` in its folder: the plugin, its
alembic.ini, its roles and claims), on a scratch database of this session's
cluster (HARBORDB_TEST_DATABASE_URL), so no second PostgreSQL starts. It may
use only harbordb's public names, and no ``type: ignore``.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import harbordb
from harbordb.testing.cluster import PostgresCluster
from harbordb.testing.plugin import scratch_database

SERVICE = Path(__file__).parents[1] / "service"


def service_files() -> list[Path]:
    files = sorted(p for p in SERVICE.rglob("*") if p.is_file() and "_cache" not in str(p))
    return [p for p in files if "__pycache__" not in p.parts]


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARBORDB_"))}
    return {**env, **extra}


@pytest.fixture
async def service_url(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    async with scratch_database(pg_cluster, "blogsvc") as url:
        yield url


def test_its_suite_passes_through_the_plugin(service_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs"),
            f"--basetemp={tmp_path / 'pytest'}",  # leave this run's temporary root alone
        ],
        cwd=SERVICE,
        env=clean_environment(HARBORDB_TEST_DATABASE_URL=service_url, CI="true"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed, summary
    assert int(passed.group(1)) >= 9, summary
    assert "skipped" not in summary


def test_it_type_checks_strictly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict"],  # files: the folder's pyproject.toml
        cwd=SERVICE,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    checked = re.search(r"no issues found in (\d+) source files", done.stdout)
    assert checked, done.stdout
    assert int(checked.group(1)) >= 8


def test_no_type_ignore_anywhere() -> None:
    offenders = [
        str(path.relative_to(SERVICE))
        for path in service_files()
        if re.search(r"type:\s*ignore", path.read_text(errors="replace"))
    ]
    assert offenders == []


def harbordb_imports(source: str) -> list[tuple[str, str | None]]:
    """(module, name) for every import of harbordb in `source` (name None: ``import m``)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return [(m, n) for m, n in found if m.split(".")[0] in ("harbordb", "harbor_commerce", "tests")]


def is_public(module_name: str, name: str | None) -> bool:
    if module_name.split(".")[0] != "harbordb":
        return False  # never the worked example or harbordb's own tests
    if any(part.startswith("_") for part in module_name.split(".")):
        return False
    module = importlib.import_module(module_name)
    if name is None:
        return True
    if module is harbordb:
        return name in harbordb.__all__
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return name in exported
    return not name.startswith("_") and hasattr(module, name)


def test_only_public_harbordb_names() -> None:
    imports = {
        (str(path.relative_to(SERVICE)), module, name)
        for path in service_files()
        if path.suffix == ".py"
        for module, name in harbordb_imports(path.read_text())
    }
    assert ("blogsvc/work.py", "harbordb", "UnitOfWork") in imports  # the check sees them
    private = sorted(item for item in imports if not is_public(item[1], item[2]))
    assert private == []


def test_its_env_py_is_the_documented_few_lines() -> None:
    lines = (SERVICE / "migrations" / "env.py").read_text().splitlines()
    assert sorted(filter(None, lines)) == [
        "from blogsvc.models import Base",
        "from harbordb.migrations import run_migrations",
        "run_migrations(Base.metadata)",
    ]
