"""Behind a transaction pooler, session state it would break is refused before the server.

Each refused statement would fail on the server with a different error (an
unknown setting, a missing function argument) if it got there: a
`PoolerUnsafe` (a `ConfigurationError`) therefore proves it did not. Directly
(``pooler="none"``) the same statements run.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from harbordb import ConfigurationError, Database
from harbordb.guards import PoolerUnsafe, check_statement
from harbordb.testing.cluster import PgBouncer

REFUSED = {
    "SET harbordb_unknown_setting = 1": "SET LOCAL",
    "set search_path = nowhere": "SET LOCAL",
    "SET SESSION work_mem = '1MB'": "SET LOCAL",
    "RESET work_mem": "SET LOCAL",
    "/* a comment */ -- and another\n SET role = nobody_at_all": "SET LOCAL",
    "LISTEN harbordb_channel": "direct connection",
    "UNLISTEN *": "direct connection",
    "SELECT pg_advisory_lock()": "pg_advisory_xact_lock",
    "SELECT pg_try_advisory_lock()": "pg_advisory_xact_lock",
    "SELECT pg_advisory_unlock()": "pg_advisory_xact_lock",
    "SELECT pg_advisory_lock_shared()": "pg_advisory_xact_lock",
    "SELECT pg_advisory_unlock_all(1)": "pg_advisory_xact_lock",
}

ALLOWED = [
    "SET LOCAL work_mem = '1MB'",
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET CONSTRAINTS ALL DEFERRED",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT set_config('work_mem', '2MB', true)",
    "SELECT 'reset'",
]


@pytest.mark.pgbouncer
@pytest.mark.parametrize("statement", list(REFUSED))
async def test_refused_through_the_pooler_before_the_server(
    pooled_database: Database, statement: str
) -> None:
    async with pooled_database.unit_of_work() as uow:
        with pytest.raises(PoolerUnsafe, match=REFUSED[statement]) as caught:
            await uow.session.execute(text(statement))
        assert isinstance(caught.value, ConfigurationError)
        # The transaction is untouched: nothing reached the server.
        assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1


@pytest.mark.pgbouncer
@pytest.mark.parametrize("statement", ALLOWED)
async def test_transaction_scoped_state_is_allowed_through_the_pooler(
    pooled_database: Database, statement: str
) -> None:
    async with pooled_database.unit_of_work() as uow:
        if statement.startswith("SET TRANSACTION"):
            await uow.session.execute(text("SELECT 1"))
            await uow.session.rollback()  # SET TRANSACTION must come first: a new one
        await uow.session.execute(text(statement))


async def test_session_state_runs_directly(database: Database) -> None:
    async with database.unit_of_work() as uow:
        await uow.session.execute(text("SET work_mem = '2MB'"))
        await uow.session.execute(text("RESET work_mem"))
        assert (await uow.session.execute(text("SELECT pg_advisory_lock(42)"))).first()
        assert (await uow.session.execute(text("SELECT pg_advisory_unlock(42)"))).scalar_one()


@pytest.mark.pgbouncer
async def test_add_listener_is_refused_through_the_pooler(pooled_database: Database) -> None:
    async with pooled_database.unit_of_work() as uow:
        connection = await uow.session.connection()
        raw = await connection.get_raw_connection()
        with pytest.raises(PoolerUnsafe, match="direct connection"):
            await raw.driver_connection.add_listener("harbordb_channel", print)  # type: ignore[union-attr]


@pytest.mark.pgbouncer
@pytest.mark.parametrize("option", ["options=-c%20jit%3Doff", "server_settings=x"])
def test_startup_options_are_refused_through_the_pooler(pgbouncer: PgBouncer, option: str) -> None:
    with pytest.raises(PoolerUnsafe, match="application_name"):
        Database(f"{pgbouncer.url}?{option}", pooler="external")


def test_the_statement_check_itself() -> None:
    for statement in REFUSED:
        with pytest.raises(PoolerUnsafe):
            check_statement(statement)
    for statement in ALLOWED:
        check_statement(statement)
