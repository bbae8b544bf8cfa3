"""pytest fixtures: a real PostgreSQL (and PgBouncer) for a service's test suite.

A service's whole configuration (install ``harbordb[testing]``; PgBouncer is
a system package, e.g. Debian's ``pgbouncer``)::

    # pyproject.toml
    [tool.pytest.ini_options]
    asyncio_mode = "auto"
    asyncio_default_fixture_loop_scope = "session"
    asyncio_default_test_loop_scope = "session"
    harbordb_alembic_ini = ["alembic.ini"]      # the schema: your migrations' head

    # conftest.py (next to that pyproject.toml: the rootdir's conftest)
    pytest_plugins = ["harbordb.testing.plugin"]

    @pytest.fixture(scope="session")
    def harbordb_database_options() -> dict[str, Any]:
        return {"unit_of_work": BlogWork, "roles": {"reader": "blog_reader"},
                "claims_setting": "blog.claims"}

The three pytest-asyncio settings are checked at startup (one event loop for
the whole session, shared by the session-scoped engines and every test): a
missing or different value is a `pytest.UsageError` naming it. The schema
comes from ``--harbordb-alembic-ini PATH`` (repeatable), else
``HARBORDB_ALEMBIC_INI`` (``os.pathsep``-separated), else the
``harbordb_alembic_ini`` ini option (paths relative to the rootdir, upgraded
in order); with none of them, tests that need the database fail and say so.
The plugin registers the ``pgbouncer`` marker.

- `pg_cluster`: a throwaway embedded PostgreSQL, or the server named by
  ``HARBORDB_TEST_DATABASE_URL`` (its database is migrated: use a scratch one).
- `migrated_url`: that database with the Alembic schema at head, built once.
- `pgbouncer`: a real PgBouncer in transaction mode in front of it. Skipped
  with instructions when the binary is missing; under ``CI=true`` that fails.
- `harbordb_database_options`: what `database` and `pooled_database` pass to
  `Database` besides the URL (``{}`` unless you override it, as above).
- `database` / `pooled_database`: `Database` direct / through PgBouncer.
- `db_connection`: an `AsyncConnection` of `database` inside an outer
  transaction that is rolled back after the test. Code under test joins it with
  ``database.unit_of_work(connection=db_connection)`` and may commit.
- `db_session`: an `AsyncSession` on `db_connection` (the same connection when
  a test takes both); the code under test may commit (savepoints).

`rolled_back_connection` and `savepoint_session` build these two for any
`Database`, e.g. a fixture of your own that runs direct and through PgBouncer.
Code that opens its own units of work commits for real: give its rows names of
their own and delete them after the test. `scratch_database` gives a test an
empty database of its own on the cluster (e.g. to test downgrades).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from harbordb.db import Database, asyncpg_dsn, normalize_url
from harbordb.testing.cluster import (
    PgBouncer,
    PostgresCluster,
    find_pgbouncer,
    start_pgbouncer,
    start_postgres,
)
from harbordb.testing.standby import Standby, start_standby

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@asynccontextmanager
async def scratch_database(cluster: PostgresCluster, prefix: str) -> AsyncIterator[str]:
    """The URL of a new empty database on `cluster`, dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(cluster.admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield normalize_url(cluster.url).set(database=name).render_as_string(False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def alembic_config(url: str, ini: str | Path) -> Config:
    """The Alembic config of `ini`, pointed at `url`, leaving logging alone."""
    config = Config(str(ini))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


# What the fixtures need from pytest-asyncio: async fixtures without decorators, and
# one loop for the session-scoped engines and the tests that use them.
ASYNCIO_SETTINGS = {
    "asyncio_mode": "auto",
    "asyncio_default_fixture_loop_scope": "session",
    "asyncio_default_test_loop_scope": "session",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pgbouncer: needs a real PgBouncer (skipped with a reason when missing, "
        "fails under CI=true)",
    )
    check_asyncio_settings(config)


def check_asyncio_settings(config: pytest.Config) -> None:
    """Raise `pytest.UsageError` naming each pytest-asyncio setting that is missing or wrong."""
    if not config.pluginmanager.hasplugin("asyncio"):
        raise pytest.UsageError(
            "harbordb.testing.plugin needs pytest-asyncio: pip install 'harbordb[testing]'"
        )
    problems = []
    for name, wanted in ASYNCIO_SETTINGS.items():
        value = config.getini(name)
        if name == "asyncio_mode" and config.getoption("asyncio_mode", None) is not None:
            value = config.getoption("asyncio_mode")  # --asyncio-mode wins over the ini
        if value != wanted:
            found = "it is not set" if value in (None, "") else f"it is {value!r}"
            problems.append(f'{name} must be "{wanted}" ({found})')
    if problems:
        lines = "\n".join(f'    {name} = "{wanted}"' for name, wanted in ASYNCIO_SETTINGS.items())
        raise pytest.UsageError(
            "harbordb.testing.plugin needs these pytest-asyncio settings: "
            + "; ".join(problems)
            + ". Put these lines under [tool.pytest.ini_options] in pyproject.toml "
            + f"(or [pytest] in pytest.ini):\n{lines}"
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "harbordb_alembic_ini",
        type="linelist",
        help="harbordb: the alembic.ini file(s) whose head is the test schema, relative to "
        "the rootdir, upgraded in order",
    )
    parser.addoption(
        "--harbordb-alembic-ini",
        action="append",
        metavar="PATH",
        help="harbordb: an alembic.ini whose head is the test schema (repeatable; overrides "
        "the ini option and HARBORDB_ALEMBIC_INI)",
    )


def alembic_inis(config: pytest.Config) -> list[Path]:
    """The configured alembic.ini files: the command line, else ``HARBORDB_ALEMBIC_INI``
    (``os.pathsep``-separated), else the ``harbordb_alembic_ini`` ini option."""
    given: list[str] = config.getoption("--harbordb-alembic-ini") or []
    if given:
        paths = [Path(item) for item in given]
    elif os.environ.get("HARBORDB_ALEMBIC_INI"):
        paths = [
            Path(item) for item in os.environ["HARBORDB_ALEMBIC_INI"].split(os.pathsep) if item
        ]
    else:
        lines: list[str] = config.getini("harbordb_alembic_ini")
        paths = [config.rootpath / line for line in lines]
    for path in paths:
        if not path.is_file():
            raise pytest.UsageError(f"harbordb: the alembic.ini {path} does not exist")
    return paths


@contextmanager
def server_dir(prefix: str) -> Iterator[Path]:
    """A new directory for a server's files, removed on exit.

    Not under pytest's temporary tree: the servers run as their own system user
    when the suite runs as root, and every pytest session that starts (a nested
    run included) resets ``/tmp/pytest-of-<user>`` to mode 0700, which would cut
    a running server off from its own files.
    """
    path = Path(tempfile.mkdtemp(prefix=f"harbordb-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    url = os.environ.get("HARBORDB_TEST_DATABASE_URL")
    if url:
        yield PostgresCluster(url=url, admin_url=url, socket_dir=None)
        return
    with server_dir("postgres") as base:
        cluster = start_postgres(base)
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def migrated_url(pg_cluster: PostgresCluster, pytestconfig: pytest.Config) -> str:
    inis = alembic_inis(pytestconfig)
    if not inis:
        pytest.fail(
            "harbordb: no test schema configured: name your alembic.ini in the "
            "harbordb_alembic_ini ini option, --harbordb-alembic-ini or HARBORDB_ALEMBIC_INI",
            pytrace=False,
        )
    for ini in inis:
        command.upgrade(alembic_config(pg_cluster.url, ini), "head")
    return pg_cluster.url


@pytest.fixture(scope="session")
def pgbouncer(migrated_url: str, pg_cluster: PostgresCluster) -> Iterator[PgBouncer]:
    if find_pgbouncer() is None:
        message = (
            "PgBouncer is not installed: apt-get install pgbouncer (Debian/Ubuntu) "
            "or put pgbouncer on PATH"
        )
        if IN_CI:
            pytest.fail(message + " (CI=true: pooler tests may not be skipped)")
        pytest.skip(message)
    with server_dir("pgbouncer") as base:
        bouncer = start_pgbouncer(pg_cluster, base, pool_size=4)
        try:
            yield bouncer
        finally:
            bouncer.stop()


@pytest.fixture(scope="session")
def harbordb_database_options() -> dict[str, Any]:
    """What `database` and `pooled_database` pass to `Database` besides the URL and pooler
    (override in your conftest: ``{"unit_of_work": BlogWork, "roles": {...}}``)."""
    return {}


@pytest.fixture(scope="session")
async def database(
    migrated_url: str, harbordb_database_options: dict[str, Any]
) -> AsyncIterator[Database[Any]]:
    options = {"pool_size": 10, **harbordb_database_options}
    async with Database(migrated_url, pooler="none", **options) as db:
        yield db


@pytest.fixture(scope="session")
async def pooled_database(
    pgbouncer: PgBouncer, harbordb_database_options: dict[str, Any]
) -> AsyncIterator[Database[Any]]:
    async with Database(pgbouncer.url, pooler="external", **harbordb_database_options) as db:
        yield db


@asynccontextmanager
async def rolled_back_connection(database: Database) -> AsyncIterator[AsyncConnection]:
    """A connection of `database` in a transaction that is rolled back on exit."""
    async with database.engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


@asynccontextmanager
async def savepoint_session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """An `AsyncSession` joining `connection`'s transaction: its commits release savepoints."""
    session = AsyncSession(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        await session.close()


@pytest.fixture
async def db_connection(database: Database) -> AsyncIterator[AsyncConnection]:
    async with rolled_back_connection(database) as connection:
        yield connection


@pytest.fixture
async def db_session(db_connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    async with savepoint_session(db_connection) as session:
        yield session


# -- read replicas ----------------------------------------------------------------------
# `pg_replica`: a streaming hot standby of `pg_cluster` (embedded PostgreSQL only), and
# `replica_pgbouncer`: a PgBouncer in transaction mode in front of it.


def _require_pgbouncer() -> None:
    if find_pgbouncer() is None:
        message = "PgBouncer is not installed: apt-get install pgbouncer (Debian/Ubuntu)"
        if IN_CI:
            pytest.fail(message + " (CI=true: pooler tests may not be skipped)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def pg_replica(migrated_url: str, pg_cluster: PostgresCluster) -> Iterator[Standby]:
    """A hot standby streaming from `pg_cluster`, with the migrated schema."""
    if pg_cluster.socket_dir is None:
        message = "pg_replica needs the embedded PostgreSQL (HARBORDB_TEST_DATABASE_URL is set)"
        if IN_CI:
            pytest.fail(message + " (CI=true: replica tests may not be skipped)")
        pytest.skip(message)
    with server_dir("replica") as base:
        standby = start_standby(pg_cluster, base)
        try:
            yield standby
        finally:
            standby.stop()


@pytest.fixture(scope="session")
def replica_pgbouncer(pg_replica: Standby) -> Iterator[PgBouncer]:
    """PgBouncer (transaction mode) in front of `pg_replica`."""
    _require_pgbouncer()
    with server_dir("replica-pgbouncer") as base:
        bouncer = start_pgbouncer(pg_replica.as_cluster(), base, pool_size=4)
        try:
            yield bouncer
        finally:
            bouncer.stop()
