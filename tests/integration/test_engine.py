"""What the engine sends to the server, checked on the server."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from tests.library.models import Author

from harbordb import Database


async def test_no_prepared_statement_outlives_its_execution(database: Database) -> None:
    async with database.engine.connect() as conn:
        for _ in range(3):
            await conn.execute(select(Author.id).where(Author.email == "nobody@example.com"))
        leftover = await conn.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
    assert leftover == 0


async def test_application_name_is_set_and_no_timeouts_at_connect(database: Database) -> None:
    async with database.engine.connect() as conn:
        assert await conn.scalar(text("SHOW application_name")) == "harbordb"
        # Startup parameters PgBouncer would reject are not sent: server defaults apply.
        assert await conn.scalar(text("SHOW statement_timeout")) == "0"


async def test_application_name_is_configurable(migrated_url: str) -> None:
    db = Database(migrated_url, application_name="catalog-api")
    async with db, db.engine.connect() as conn:
        assert await conn.scalar(text("SHOW application_name")) == "catalog-api"


async def test_session_objects_stay_readable_after_commit(database: Database) -> None:
    async with database.session() as session:
        author = Author(email="engine-commit@example.com", name="Grace")
        session.add(author)
        await session.commit()
        assert author.name == "Grace"  # expire_on_commit=False: no reload, no lazy load
        await session.delete(author)
        await session.commit()


async def _kill_pool_and_check_out(db: Database, migrated_url: str) -> tuple[set[int], int]:
    """Fill a 2-connection pool, terminate its backends from outside, check out again."""
    async with db.engine.connect() as first, db.engine.connect() as second:
        old = {
            await first.scalar(text("SELECT pg_backend_pid()")),
            await second.scalar(text("SELECT pg_backend_pid()")),
        }
    async with Database(migrated_url) as admin, admin.engine.connect() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'harbordb-ping-test'"
            )
        )
    assert killed == 2
    async with db.engine.connect() as conn:
        fresh = await conn.scalar(text("SELECT pg_backend_pid()"))
    return old, fresh


async def test_dead_pooled_connections_are_replaced_on_checkout(migrated_url: str) -> None:
    """A server restart or an idle-connection reaper must not fail the next request."""
    db = Database(
        migrated_url, pool_size=2, pool_ping_after=0, application_name="harbordb-ping-test"
    )
    async with db:
        old, fresh = await _kill_pool_and_check_out(db, migrated_url)
    assert fresh not in old


async def test_recently_used_connections_are_not_pinged(migrated_url: str) -> None:
    """Inside `pool_ping_after` the ping is skipped: a connection killed then surfaces."""
    db = Database(
        migrated_url, pool_size=2, pool_ping_after=3600, application_name="harbordb-ping-test"
    )
    async with db:
        # asyncpg reports the dead connection as closed, or as a protocol error when
        # the termination arrives mid-query: either way the driver fails, no ping ran.
        with pytest.raises(DBAPIError):
            await _kill_pool_and_check_out(db, migrated_url)
