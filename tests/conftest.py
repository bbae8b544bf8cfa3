"""Fixtures both halves of the suite use: the library's tests (tests/integration, on the
models of tests/library) and Harbor Commerce's (tests/harbor_commerce).

The plugin's `database` / `pooled_database` are Harbor Commerce's here (`CommerceWork`,
its roles); tests/integration/conftest.py builds the library's own instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from harbor_commerce.uow import DATABASE_OPTIONS
from harbordb import Database
from harbordb.testing.cluster import PgBouncer

pytest_plugins = ["harbordb.testing.plugin"]

# tests/service is a service of its own, with its own pytest configuration: its suite is
# run in a subprocess by tests/integration/test_service_example.py.
collect_ignore = ["service"]

DIRECT_AND_POOLED = ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)]


@pytest.fixture(scope="session")
def harbordb_database_options() -> dict[str, Any]:
    """Harbor Commerce's `Database` arguments (tests/integration overrides them)."""
    return dict(DATABASE_OPTIONS)


@pytest.fixture(params=DIRECT_AND_POOLED)
def db(request: pytest.FixtureRequest) -> Database:
    """The suite's `Database`, directly and through PgBouncer (``pooler="external"``)."""
    name = "database" if request.param == "direct" else "pooled_database"
    database: Database = request.getfixturevalue(name)
    return database


@pytest.fixture(params=DIRECT_AND_POOLED)
async def one_connection_db(
    request: pytest.FixtureRequest, migrated_url: str, harbordb_database_options: dict[str, Any]
) -> AsyncIterator[Database]:
    """A `Database` of its own: direct with a single pooled connection (so a broken
    connection, or settings that outlived their transaction, would be handed to the
    next unit of work), or through PgBouncer."""
    if request.param == "direct":
        database = Database(
            migrated_url, pooler="none", pool_size=1, max_overflow=0, **harbordb_database_options
        )
    else:
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        database = Database(bouncer.url, pooler="external", **harbordb_database_options)
    async with database:
        yield database


@pytest.fixture
async def session(db: Database) -> AsyncIterator[AsyncSession]:
    """A session of `db` inside an outer transaction that is rolled back after the test.

    Its savepoint is opened before the test starts, outside any statement count.
    """
    # Imported here: a conftest that imports the plugin at the top keeps pytest from
    # rewriting its asserts (it is registered by `pytest_plugins` below that import).
    from harbordb.testing.plugin import rolled_back_connection, savepoint_session

    async with rolled_back_connection(db) as connection, savepoint_session(connection) as session:
        await session.connection()
        yield session


async def _wait_for_lock_wait(db: Database, statement_prefix: str) -> None:
    """Until a backend running `statement_prefix` waits for a lock (fails after 10 s)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND starts_with(query, :prefix)"
    )
    with anyio.fail_after(10):
        while True:
            async with db.unit_of_work(read_only=True) as uow:
                if await uow.session.scalar(query, {"prefix": statement_prefix}):
                    return
            await anyio.sleep(0.01)


@pytest.fixture
def wait_for_lock_wait() -> Callable[[Database, str], Awaitable[None]]:
    """``await wait_for_lock_wait(db, statement_prefix)``: until a backend running a
    statement that starts with `statement_prefix` waits for a lock (fails after 10 s)."""
    return _wait_for_lock_wait
