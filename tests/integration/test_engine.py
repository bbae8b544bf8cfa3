"""What the engine sends to the server, checked on the server."""

from __future__ import annotations

from sqlalchemy import select, text

from harbordb import Database
from harbordb.models import Customer


async def test_no_prepared_statement_outlives_its_execution(database: Database) -> None:
    async with database.engine.connect() as conn:
        for _ in range(3):
            await conn.execute(select(Customer.id).where(Customer.email == "nobody@example.com"))
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
        customer = Customer(email="engine-commit@example.com", name="Grace")
        session.add(customer)
        await session.commit()
        assert customer.name == "Grace"  # expire_on_commit=False: no reload, no lazy load
        await session.delete(customer)
        await session.commit()


async def test_dead_pooled_connections_are_replaced_on_checkout(migrated_url: str) -> None:
    """A server restart or an idle-connection reaper must not fail the next request."""
    async with Database(migrated_url, pool_size=2, application_name="harbordb-ping-test") as db:
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
        async with db.engine.connect() as conn:  # checks out a dead connection, pings, replaces
            fresh = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert fresh not in old
