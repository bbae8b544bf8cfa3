"""harbordb.testing.plugin in a service's own pytest run: the settings it checks, its marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = {
    "asyncio_mode": "auto",
    "asyncio_default_fixture_loop_scope": "session",
    "asyncio_default_test_loop_scope": "session",
}

CONFTEST = 'pytest_plugins = ["harbordb.testing.plugin"]\n'

TEST = """\
import pytest


@pytest.mark.pgbouncer
async def test_marked_and_async() -> None:
    pass
"""


def run_pytest(
    tmp_path: Path, settings: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """pytest in a project of its own: a pyproject.toml with `settings`, the plugin, one test."""
    lines = "".join(f'{name} = "{value}"\n' for name, value in settings.items())
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\naddopts = "--strict-markers"\n{lines}'
    )
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_service.py").write_text(TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARBORDB_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_documented_settings_run_async_tests_with_the_pgbouncer_marker(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, GOOD)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.parametrize("missing", sorted(GOOD))
def test_a_missing_setting_is_a_usage_error_naming_it(tmp_path: Path, missing: str) -> None:
    settings = {name: value for name, value in GOOD.items() if name != missing}
    done = run_pytest(tmp_path, settings)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert f'{missing} must be "{GOOD[missing]}"' in done.stderr
    others = set(GOOD) - {missing}
    assert not any(f"{name} must be" in done.stderr for name in others)
    assert "different loop" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("asyncio_mode", "strict"),
        ("asyncio_default_fixture_loop_scope", "function"),
        ("asyncio_default_test_loop_scope", "module"),
    ],
)
def test_a_conflicting_setting_is_a_usage_error_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    done = run_pytest(tmp_path, {**GOOD, name: value})
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert f"{name} must be \"{GOOD[name]}\" (it is '{value}')" in done.stderr


def test_the_command_line_asyncio_mode_is_checked_too(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, GOOD, "--asyncio-mode=strict")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "asyncio_mode must be \"auto\" (it is 'strict')" in done.stderr
