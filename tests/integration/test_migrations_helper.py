"""harbordb.migrations.run_migrations, on a tiny Alembic project of the test's own."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from harbordb import ConfigurationError, normalize_url
from harbordb.migrations import asyncpg_dsn, run_migrations
from harbordb.testing.cluster import PostgresCluster
from harbordb.testing.plugin import scratch_database

NOTES_PROJECT = Path(__file__).with_name("notes_project")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of notes_project: an alembic.ini, a three-line env.py and one revision."""
    shutil.copytree(NOTES_PROJECT, tmp_path / "notes", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "notes" / "alembic.ini"


@pytest.fixture
async def scratch_url(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    async with scratch_database(pg_cluster, "harbordb_helper") as url:
        yield url


def config_for(ini: Path, url: str | None = None, sql: io.StringIO | None = None) -> Config:
    config = Config(str(ini), stdout=io.StringIO(), output_buffer=sql)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


async def tables_and_version(url: str) -> tuple[set[str], list[str]]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        names = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        versions: list[str] = []
        if any(row["tablename"] == "notes_version" for row in names):
            versions = [r["version_num"] for r in await connection.fetch("TABLE notes_version")]
        return {row["tablename"] for row in names}, versions
    finally:
        await connection.close()


@pytest.fixture
def no_url_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HARBORDB_MIGRATION_URL", "HARBORDB_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


async def test_upgrade_and_downgrade_from_inside_a_running_loop(
    project: Path, scratch_url: str
) -> None:
    """This test's own loop is running: the helper must not call asyncio.run on it."""
    config = config_for(project, scratch_url)
    command.upgrade(config, "head")
    assert await tables_and_version(scratch_url) == ({"notes", "notes_version"}, ["n1"])
    command.current(config)
    command.check(config)  # the env's metadata matches the migrated schema
    command.downgrade(config, "base")
    assert await tables_and_version(scratch_url) == ({"notes_version"}, [])


def test_upgrade_without_a_loop_reads_the_environment(
    project: Path, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sqlalchemy.url: HARBORDB_MIGRATION_URL wins over the application's URL."""
    monkeypatch.setenv("HARBORDB_MIGRATION_URL", scratch_url)
    monkeypatch.setenv("HARBORDB_DATABASE_URL", "postgresql://nobody@db.invalid/app")
    command.upgrade(config_for(project), "head")
    command.downgrade(config_for(project), "base")


async def test_a_failure_in_the_worker_thread_reaches_the_caller(
    project: Path, scratch_url: str
) -> None:
    missing = scratch_url.replace("/harbordb_helper_", "/harbordb_missing_", 1)
    with pytest.raises(DBAPIError, match="does not exist"):
        command.upgrade(config_for(project, missing), "head")


async def test_a_shared_connection_is_used_and_its_transaction_left_to_the_caller(
    project: Path, scratch_url: str
) -> None:
    engine = create_async_engine(normalize_url(scratch_url))
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()

            def upgrade(sync_connection: object) -> None:
                config = config_for(project)  # no URL anywhere: the connection is enough
                config.attributes["connection"] = sync_connection
                command.upgrade(config, "head")

            await connection.run_sync(upgrade)
            assert await connection.scalar(text("SELECT count(*) FROM notes")) == 1
            await transaction.rollback()  # the caller's call: nothing was committed
        assert await tables_and_version(scratch_url) == (set(), [])
    finally:
        await engine.dispose()


async def test_an_async_connection_is_refused_with_directions(
    project: Path, scratch_url: str
) -> None:
    engine = create_async_engine(normalize_url(scratch_url))
    try:
        async with engine.connect() as connection:
            config = config_for(project)
            config.attributes["connection"] = connection
            with pytest.raises(ConfigurationError, match="run_sync"):
                command.upgrade(config, "head")
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("no_url_in_environment")
def test_offline_mode_prints_sql_without_a_database(project: Path) -> None:
    out = io.StringIO()
    command.upgrade(config_for(project, sql=out), "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE notes_version" in sql
    assert "CREATE TABLE notes (" in sql
    assert "INSERT INTO notes (body) VALUES ('it''s here')" in sql  # literal binds
    assert "INSERT INTO notes_version (version_num) VALUES ('n1')" in sql


@pytest.mark.usefixtures("no_url_in_environment")
def test_no_url_is_a_configuration_error(project: Path) -> None:
    with pytest.raises(ConfigurationError, match="HARBORDB_MIGRATION_URL"):
        command.upgrade(config_for(project), "head")


def test_a_bad_url_is_not_echoed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARBORDB_MIGRATION_URL", "mysql://app:s3cret-pw@db.internal/app")
    with pytest.raises(ConfigurationError) as caught:
        command.upgrade(config_for(project), "head")
    assert "s3cret-pw" not in str(caught.value)
    assert "db.internal" not in str(caught.value)


def test_run_migrations_is_public() -> None:
    assert callable(run_migrations)
