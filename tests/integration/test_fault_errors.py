"""Under injected faults, only `HarborError`s come out of harbordb's public API.

Each fault is real: a private PostgreSQL stopped (its Unix socket file gone),
a private PgBouncer killed, a pool with no free connection, a role at its
connection limit (53300). Every public repository method and every unit of
work step is called under it, and whatever it raises must be a HarborError
(and, for these faults, an `Unavailable`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from sqlalchemy import text, true
from tests.library.models import Author
from tests.library.repositories import DATABASE_OPTIONS, LibraryWork

from harbordb import Database, HarborError, Unavailable
from harbordb.testing.cluster import PostgresCluster, start_pgbouncer, start_postgres
from harbordb.testing.plugin import server_dir

Op = Callable[[LibraryWork], Awaitable[object]]


def _author() -> Author:
    return Author(email=f"fault-{uuid.uuid4().hex}@example.com", name="fault")


def library_database(url: str, **options: Any) -> Database[LibraryWork]:
    return Database(url, **DATABASE_OPTIONS, **options)


async def _savepoint(uow: LibraryWork) -> None:
    async with uow.savepoint():
        await uow.session.execute(text("SELECT 1"))


OPERATIONS: dict[str, Op] = {
    "execute": lambda uow: uow.session.execute(text("SELECT 1")),
    "get": lambda uow: uow.books.get(1),
    "get_or_none": lambda uow: uow.books.get_or_none(1, load=("author",)),
    "get_many": lambda uow: uow.books.get_many([1, 2]),
    "list": lambda uow: uow.books.list(limit=5),
    "count": lambda uow: uow.books.count(),
    "exists": lambda uow: uow.authors.exists(name="fault"),
    "page": lambda uow: uow.books.page(limit=5),
    "offset_page": lambda uow: uow.books.offset_page(page=2, limit=5),
    "add": lambda uow: uow.authors.add(_author()),
    "add_many": lambda uow: uow.authors.add_many([_author(), _author()]),
    "update": lambda uow: uow.authors.update(1, name="x"),
    "delete": lambda uow: uow.authors.delete(1),
    "update_where": lambda uow: uow.authors.update_where(true(), values={"name": "x"}),
    "delete_where": lambda uow: uow.authors.delete_where(name="nobody"),
    "upsert": lambda uow: uow.authors.upsert({"email": "f@example.com", "name": "f"}),
    "upsert_many": lambda uow: uow.authors.upsert_many([{"email": "g@x.org", "name": "g"}]),
    "estimated_rows": lambda uow: uow.authors.estimated_rows(),
    "savepoint": _savepoint,
    "flush": lambda uow: uow.flush(),
    "commit": lambda uow: uow.commit(),
}


async def _outcome(call: Callable[[], Awaitable[object]]) -> BaseException | None:
    try:
        await call()
    except Exception as exc:
        return exc
    return None


def _assert_unavailable(errors: dict[str, BaseException | None]) -> None:
    """Every call failed, and with an `Unavailable`."""
    wrong = {
        name: f"{type(error).__module__}.{type(error).__name__}: {error}"
        for name, error in errors.items()
        if not isinstance(error, Unavailable)
    }
    assert not wrong, wrong
    assert all(isinstance(error, HarborError) for error in errors.values())


async def _every_operation_in_open_units_of_work(
    db: Database[LibraryWork], fault: Callable[[], None]
) -> dict[str, BaseException | None]:
    """Open one unit of work per operation (connected), inject `fault`, then call each
    operation in its unit of work and leave the blocks: what came out of each."""
    errors: dict[str, BaseException | None] = {}
    units = {name: db.unit_of_work() for name in OPERATIONS}
    for uow in units.values():
        await uow.__aenter__()
        await uow.session.execute(text("SELECT 1"))  # each holds a live connection now
    await anyio.to_thread.run_sync(fault)
    for name, op in OPERATIONS.items():
        uow = units[name]
        error = await _outcome(lambda: op(uow))  # noqa: B023 (awaited at once)
        # What `async with` does: the block's error goes to __aexit__, which
        # translates what the session raised (a caller's own session.execute).
        left = await _outcome(
            lambda: uow.__aexit__(type(error) if error else None, error, None)  # noqa: B023
        )
        errors[name] = left or error
        assert left is None or isinstance(left, HarborError), repr(left)
    return errors


async def _enter(db: Database[LibraryWork]) -> None:
    async with db.unit_of_work() as uow:
        await uow.books.count()


@pytest.fixture
async def private_cluster() -> AsyncIterator[PostgresCluster]:
    """A PostgreSQL of the test's own, which it may stop (no schema: no call gets that far)."""
    with server_dir("postgres") as base:
        cluster = await anyio.to_thread.run_sync(start_postgres, base)
        try:
            yield cluster
        finally:
            await anyio.to_thread.run_sync(cluster.stop)


async def test_a_stopped_server_gives_only_unavailable(private_cluster: PostgresCluster) -> None:
    db = library_database(private_cluster.url, pool_size=len(OPERATIONS), max_overflow=2)
    async with db:
        errors = await _every_operation_in_open_units_of_work(db, private_cluster.stop)
        _assert_unavailable(errors)
        # A new unit of work, a new connection: the socket file is gone (FileNotFoundError).
        fresh = await _outcome(lambda: _enter(db))
        _assert_unavailable({"enter": fresh})
        run = await _outcome(lambda: db.run(lambda uow: uow.books.count()))
        _assert_unavailable({"run": run})


@pytest.mark.pgbouncer
async def test_a_killed_pgbouncer_gives_only_unavailable(
    private_cluster: PostgresCluster, server_tmp: Path
) -> None:
    bouncer = await anyio.to_thread.run_sync(
        partial(start_pgbouncer, pool_size=len(OPERATIONS) + 2),  # a transaction each
        private_cluster,
        server_tmp / "pgb",
    )
    try:
        async with library_database(bouncer.url, pooler="external") as db:
            errors = await _every_operation_in_open_units_of_work(db, bouncer.stop)
            _assert_unavailable(errors)
            _assert_unavailable({"enter": await _outcome(lambda: _enter(db))})  # refused
    finally:
        await anyio.to_thread.run_sync(bouncer.stop)


async def test_an_exhausted_pool_is_unavailable_naming_its_size(migrated_url: str) -> None:
    async with library_database(migrated_url, pool_size=1, max_overflow=1, pool_timeout=0.2) as db:
        async with db.unit_of_work(), db.unit_of_work():
            waited = await _outcome(lambda: _enter(db))
            timed = await _outcome(lambda: db.run(lambda uow: uow.books.count(), timeout=0.1))
        _assert_unavailable({"enter": waited, "run": timed})
        assert "pool_size 1 + max_overflow 1" in str(waited)
        assert "within 0.2 s" in str(waited)
        assert "within 0.1 s" in str(timed)
        # Connections taken around the units of work: SQLAlchemy's own pool wait.
        async with db.engine.connect(), db.engine.connect():
            bypassed = await _outcome(lambda: _enter(db))
        _assert_unavailable({"enter": bypassed})
        assert "QueuePool limit" in str(bypassed)
        await _enter(db)  # and everything is free again


async def test_too_many_connections_is_unavailable(
    migrated_url: str, database: Database[LibraryWork]
) -> None:
    role = f"harbordb_limited_{uuid.uuid4().hex[:8]}"
    async with database.engine.connect() as admin:
        await admin.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1'))
        await admin.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        await admin.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
        await admin.commit()
    url = migrated_url.replace("postgres@", f"{role}@", 1)
    try:
        async with library_database(url, pool_size=2, max_overflow=0) as db:
            async with db.unit_of_work():
                refused = await _outcome(lambda: _enter(db))
            _assert_unavailable({"enter": refused})
            assert isinstance(refused, Unavailable)
            assert refused.sqlstate == "53300"
            await _enter(db)  # the one allowed connection is back
    finally:
        async with database.engine.connect() as admin:
            await admin.execute(text(f'DROP OWNED BY "{role}"'))
            await admin.execute(text(f'DROP ROLE "{role}"'))
            await admin.commit()


@pytest.mark.pgbouncer
async def test_a_paused_pgbouncer_is_unavailable_within_the_timeout(
    private_cluster: PostgresCluster,
) -> None:
    with server_dir("pgbouncer") as base:
        bouncer = await anyio.to_thread.run_sync(start_pgbouncer, private_cluster, base)
        admin = await asyncpg.connect(bouncer.admin_url, statement_cache_size=0)
        try:
            async with library_database(bouncer.url, pooler="external") as db:
                await admin.execute("PAUSE")
                try:
                    paused = await _outcome(lambda: _enter_with_timeout(db, 0.5))
                finally:
                    await admin.execute("RESUME")
                _assert_unavailable({"enter": paused})
                # The unit of work's own timeout ended the wait, not PgBouncer's
                # query_wait_timeout (120 s), which would fail differently.
                assert "timeout (0.5 s) passed while connecting" in str(paused)
                await _enter_with_timeout(db, 5)  # resumed
        finally:
            await admin.close()
            await anyio.to_thread.run_sync(bouncer.stop)


async def _enter_with_timeout(db: Database[LibraryWork], seconds: float) -> None:
    async with db.unit_of_work(timeout=seconds) as uow:
        await uow.session.execute(text("SELECT 1"))  # the private cluster has no schema


@pytest.mark.pgbouncer
async def test_a_pgbouncer_killed_and_restarted_serves_again(
    private_cluster: PostgresCluster, server_tmp: Path
) -> None:
    first = await anyio.to_thread.run_sync(start_pgbouncer, private_cluster, server_tmp / "pgb1")
    async with library_database(first.url, pooler="external") as db:
        try:
            await _enter_with_timeout(db, 10)
            await anyio.to_thread.run_sync(first.stop)
            _assert_unavailable({"down": await _outcome(lambda: _enter_with_timeout(db, 10))})
            again = await anyio.to_thread.run_sync(
                partial(start_pgbouncer, port=first.port), private_cluster, server_tmp / "pgb2"
            )
        finally:
            await anyio.to_thread.run_sync(first.stop)
        try:
            await _enter_with_timeout(db, 10)  # the same Database, no restart of the service
        finally:
            await anyio.to_thread.run_sync(again.stop)
