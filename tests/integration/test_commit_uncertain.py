"""A commit whose outcome is unknown is `CommitUncertain`, never retried, and a unique
request key makes calling again safe.

COMMIT is made slow for real: a deferred constraint trigger sleeps when a row's
request key starts with "slow", so the trigger runs inside COMMIT. While it
sleeps, the test terminates the backend or cancels the task. Either way the
caller cannot know whether the row committed: it gets `CommitUncertain`, and
`Database.run` does not run the function again. Calling again with the same
request key (an idempotent write) leaves exactly one row.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from sqlalchemy import text

from harbordb import CommitUncertain, Database, HarborError, UnitOfWork

TABLE = "commit_probe"


@pytest.fixture(scope="module")
async def probe(database: Database) -> AsyncIterator[None]:
    """`commit_probe(request_key unique)`, whose COMMIT sleeps 2 s for keys 'slow...'."""
    async with database.engine.begin() as connection:
        for statement in (
            f"CREATE TABLE {TABLE} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "request_key text NOT NULL UNIQUE)",
            "CREATE FUNCTION commit_probe_sleep() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF NEW.request_key LIKE 'slow%' THEN PERFORM pg_sleep(2); END IF; "
            "RETURN NULL; END $$",
            f"CREATE CONSTRAINT TRIGGER commit_probe_sleep AFTER INSERT ON {TABLE} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_probe_sleep()",
            f"GRANT ALL ON {TABLE} TO PUBLIC",
        ):
            await connection.execute(text(statement))
    yield
    async with database.engine.begin() as connection:
        await connection.execute(text(f"DROP TABLE {TABLE}"))
        await connection.execute(text("DROP FUNCTION commit_probe_sleep()"))


async def record(uow: UnitOfWork, request_key: str) -> int:
    """The idempotent write: insert once per request key, return the row either way."""
    insert = text(
        f"INSERT INTO {TABLE} (request_key) VALUES (:key) ON CONFLICT (request_key) DO NOTHING"
    )
    await uow.session.execute(insert, {"key": request_key})
    select = text(f"SELECT id FROM {TABLE} WHERE request_key = :key")
    return int((await uow.session.execute(select, {"key": request_key})).scalar_one())


async def _rows(database: Database, request_key: str) -> int:
    async with database.unit_of_work(read_only=True) as uow:
        count = text(f"SELECT count(*) FROM {TABLE} WHERE request_key = :key")
        return int((await uow.session.execute(count, {"key": request_key})).scalar_one())


async def _terminate_when_committing(database: Database) -> None:
    """Terminate the backend sleeping in the probe's trigger (inside COMMIT)."""
    query = text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE wait_event = 'PgSleep' AND query ILIKE 'COMMIT%'"
    )
    with anyio.fail_after(10):
        while True:
            async with database.engine.connect() as admin:
                if (await admin.execute(query)).first() is not None:
                    return
            await anyio.sleep(0.02)


@pytest.mark.usefixtures("probe")
async def test_a_connection_lost_during_commit_is_commit_uncertain_and_not_rerun(
    db: Database, database: Database
) -> None:
    key = f"slow-{uuid.uuid4().hex}"
    calls = 0

    async def write(uow: UnitOfWork) -> int:
        nonlocal calls
        calls += 1
        return await record(uow, key)

    errors: list[Exception] = []

    async def call() -> None:
        try:
            await db.run(write, retries=3)
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call)
        await _terminate_when_committing(database)
    assert [type(e) for e in errors] == [CommitUncertain], errors
    assert isinstance(errors[0], HarborError)
    assert "may or may not have committed" in str(errors[0])
    assert calls == 1  # never re-run by db.run
    # The service calls again with the same request key: one row, whatever happened.
    again = await db.run(lambda uow: record(uow, key))  # this COMMIT sleeps, then succeeds
    assert await db.run(lambda uow: record(uow, key)) == again
    assert await _rows(database, key) == 1


@pytest.mark.usefixtures("probe")
async def test_cancelled_during_commit_is_commit_uncertain(
    db: Database, database: Database
) -> None:
    key = f"slow-{uuid.uuid4().hex}"
    outcome: list[BaseException] = []

    async def write() -> None:
        try:
            async with db.unit_of_work() as uow:
                await record(uow, key)
                await uow.commit()
        except BaseException as exc:
            outcome.append(exc)
            if not isinstance(exc, CommitUncertain):
                raise

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(write)
        await _wait_until_committing(database)
        tasks.cancel_scope.cancel()
    assert len(outcome) == 1
    assert isinstance(outcome[0], CommitUncertain)
    assert "cancelled while committing" in str(outcome[0])
    # Calling again is safe: one row whichever way the first commit went.
    async with db.unit_of_work() as uow:
        await record(uow, key)
        await uow.commit()
    assert await _rows(database, key) == 1


async def _wait_until_committing(database: Database) -> None:
    query = text(
        "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ILIKE 'COMMIT%'"
    )
    with anyio.fail_after(10):
        while True:
            async with database.engine.connect() as admin:
                if (await admin.execute(query)).first() is not None:
                    return
            await anyio.sleep(0.02)
