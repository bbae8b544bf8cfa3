"""`harbordb migrate`, run as the installed command against the real database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from harbordb.migrations import asyncpg_dsn
from harbordb.testing.cluster import PostgresCluster
from harbordb.testing.plugin import scratch_database

NOTES_PROJECT = Path(__file__).with_name("notes_project")
HARBORDB = Path(sys.executable).with_name("harbordb")
URL_VARIABLES = ("HARBORDB_MIGRATION_URL", "HARBORDB_DATABASE_URL", "DATABASE_URL")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of notes_project (the command may write revisions into it)."""
    target = tmp_path / "notes"
    shutil.copytree(NOTES_PROJECT, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
async def scratch_url(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    async with scratch_database(pg_cluster, "harbordb_cli") as url:
        yield url


def harbordb(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `harbordb` command with no database URL in its environment."""
    assert HARBORDB.exists(), f"the harbordb console script is not installed at {HARBORDB}"
    clean = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    return subprocess.run(
        [str(HARBORDB), *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def tables(url: str) -> set[str]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await connection.close()


async def test_upgrade_current_check_downgrade(project: Path, scratch_url: str) -> None:
    url = ["--database-url", scratch_url]
    done = harbordb("migrate", "upgrade", *url, cwd=project)  # ./alembic.ini by default
    assert done.returncode == 0, done.stderr
    assert await tables(scratch_url) == {"notes", "notes_version"}

    done = harbordb("migrate", *url, "current", cwd=project)  # options before the action too
    assert (done.returncode, done.stdout.strip()) == (0, "n1 (head)"), done.stderr
    done = harbordb("migrate", "check", *url, cwd=project)
    assert done.returncode == 0, done.stderr

    done = harbordb("migrate", "downgrade", "base", *url, cwd=project)
    assert done.returncode == 0, done.stderr
    assert await tables(scratch_url) == {"notes_version"}


async def test_the_url_comes_from_the_environment(project: Path, scratch_url: str) -> None:
    env = {"HARBORDB_MIGRATION_URL": scratch_url, "DATABASE_URL": "postgresql://x@db.invalid/x"}
    done = harbordb("migrate", "upgrade", "--config", str(project / "alembic.ini"), cwd=Path("/"))
    assert done.returncode == 2  # no URL at all without the environment
    done = harbordb(
        "migrate", "upgrade", "--config", str(project / "alembic.ini"), cwd=Path("/"), env=env
    )
    assert done.returncode == 0, done.stderr
    assert "notes" in await tables(scratch_url)


async def test_check_exits_1_on_drift_and_revision_autogenerates_the_fix(
    project: Path, scratch_url: str
) -> None:
    url = ["--database-url", scratch_url]
    assert harbordb("migrate", "upgrade", *url, cwd=project).returncode == 0
    env_py = project / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            'Column("body", Text)', 'Column("body", Text), Column("tag", Text)'
        )
    )
    done = harbordb("migrate", "check", *url, cwd=project)
    assert done.returncode == 1
    assert "tag" in done.stderr

    done = harbordb(
        "migrate", "revision", "-m", "notes tag", "--autogenerate", "--rev-id", "n2", *url,
        cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (written,) = (project / "migrations" / "versions").glob("n2_*.py")
    assert "op.add_column('notes', sa.Column('tag'" in written.read_text()
    assert harbordb("migrate", "upgrade", *url, cwd=project).returncode == 0
    assert harbordb("migrate", "check", *url, cwd=project).returncode == 0


def test_upgrade_sql_needs_no_database(project: Path) -> None:
    done = harbordb("migrate", "upgrade", "--sql", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE notes (" in done.stdout


def test_a_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    done = harbordb("migrate", "current", cwd=tmp_path)
    assert done.returncode == 2
    assert "no Alembic config at alembic.ini" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_url_and_a_bad_url_are_usage_errors_that_do_not_echo_it(project: Path) -> None:
    done = harbordb("migrate", "upgrade", cwd=project)
    assert done.returncode == 2
    assert "HARBORDB_MIGRATION_URL" in done.stderr
    secret = "mysql://app:s3cret-pw@db.internal/app"
    done = harbordb("migrate", "upgrade", "--database-url", secret, cwd=project)
    assert done.returncode == 2
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


async def test_a_failing_command_exits_3(project: Path, scratch_url: str) -> None:
    done = harbordb("migrate", "upgrade", "nope", "--database-url", scratch_url, cwd=project)
    assert done.returncode == 3
    assert "nope" in done.stderr
    missing = scratch_url.replace("/harbordb_cli_", "/harbordb_gone_", 1)
    done = harbordb("migrate", "upgrade", "--database-url", missing, cwd=project)
    assert done.returncode == 3
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_database_exits_3_with_a_hint(project: Path) -> None:
    url = "postgresql://app:s3cret-pw@/blog?host=/nonexistent-harbordb-socket-dir"
    done = harbordb("migrate", "current", "--database-url", url, cwd=project)
    assert done.returncode == 3
    assert "is the database up" in done.stderr
    assert "s3cret-pw" not in done.stderr
