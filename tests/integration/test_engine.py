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
