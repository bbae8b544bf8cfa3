"""``named_statements=True`` on a real PostgreSQL: one round trip per repeated statement,
and never a wrong value when the schema changes under open pooled connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from benchmarks.counting import count_round_trips
from sqlalchemy import BigInteger, Integer, MetaData, select, text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from harbordb import (
    ConfigurationError,
    Database,
    DatabaseError,
    Projection,
    Retryable,
    UnitOfWork,
    driver,
)
from harbordb.driver import DIALECT_MEMBERS
from harbordb.testing.cluster import PgBouncer

SCHEMA = "named_statements"
TABLE = f"{SCHEMA}.gauges"
CONNECTIONS = 4


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Gauge(Base):
    __tablename__ = "gauges"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    v: Mapped[Any] = mapped_column(Integer)  # no result processing: the driver's values


@dataclass(frozen=True)
class Reading:
    id: int
    v: Any


READINGS = Projection(Reading, Gauge)
ORM_READ = select(Gauge.v).where(Gauge.id == 1)  # through SQLAlchemy's statement cache
STAR_READ = text(f"SELECT * FROM {TABLE} WHERE id = 1")  # its result changes with the columns


async def _reads(uow: UnitOfWork) -> tuple[Any, Any, dict[str, Any]]:
    """The value as the ORM, a projection (asyncpg's cache) and SELECT * read it."""
    orm = await uow.session.scalar(ORM_READ)
    projected = await READINGS.get(uow, 1)
    assert projected is not None
    star = dict((await uow.session.execute(STAR_READ)).mappings().one())
    return orm, projected.v, star


@pytest.fixture
async def named(migrated_url: str) -> AsyncIterator[Database]:
    async with Database(migrated_url, pool_size=CONNECTIONS, named_statements=True) as db:
        async with db.engine.begin() as connection:
            await connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            await connection.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
            await connection.execute(text(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, v int)"))
            await connection.execute(text(f"INSERT INTO {TABLE} VALUES (1, 42)"))
        try:
            yield db
        finally:
            async with db.engine.begin() as connection:
                await connection.execute(text(f"DROP SCHEMA {SCHEMA} CASCADE"))


async def _on_every_connection(
    db: Database, work: Callable[[UnitOfWork], Awaitable[Any]]
) -> list[Any]:
    """`work` in CONNECTIONS units of work open at once (so on every pooled connection):
    what each returned, or the HarborError it raised."""
    everyone_in = asyncio.Barrier(CONNECTIONS)

    async def one() -> Any:
        try:
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("SELECT 1"))  # holds its connection from here
                await everyone_in.wait()
                return await work(uow)
        except DatabaseError as exc:  # the unit of work translates on its way out
            return exc

    return list(await asyncio.gather(*(one() for _ in range(CONNECTIONS))))


async def _pids(uow: UnitOfWork) -> int:
    return int(await uow.session.scalar(text("SELECT pg_backend_pid()")) or 0)


async def _projected(uow: UnitOfWork) -> Any:
    reading = await READINGS.get(uow, 1)
    assert reading is not None
    return reading.v


async def test_live_schema_changes_never_return_wrong_values(named: Database) -> None:
    """Change v's type twice, add and drop a column, while every pooled connection holds
    named statements for the reads: each later read is right or `Retryable`, and
    `Database.run` then succeeds on every connection.

    "direct" first reads in units of work open on every connection at once (each
    result right or `Retryable`), then through `Database.run`. "run" first goes
    through `Database.run` with projection reads alone, one connection after the
    other (the pool hands them out in turn): it succeeds only if the first
    refusal made every other connection drop its asyncpg cache, since each
    connection failing once would use up the re-runs."""
    assert len(set(await _on_every_connection(named, _pids))) == CONNECTIONS
    for _ in range(2):  # prepared, then run from the caches
        first = await _on_every_connection(named, _reads)
        assert all(r == (42, 42, {"id": 1, "v": 42}) for r in first), first
    retryable = 0
    for change, first, expected in [
        ("ALTER COLUMN v TYPE real USING v + 0.5", "direct", (42.5, 42.5, {"id": 1, "v": 42.5})),
        ("ADD COLUMN w integer DEFAULT 7", "direct", (42.5, 42.5, {"id": 1, "v": 42.5, "w": 7})),
        ("ALTER COLUMN v TYPE text", "run", ("42.5", "42.5", {"id": 1, "v": "42.5", "w": 7})),
        ("DROP COLUMN w", "direct", ("42.5", "42.5", {"id": 1, "v": "42.5"})),
    ]:
        async with named.engine.begin() as connection:  # DDL on a connection of its own
            await connection.execute(text(f"ALTER TABLE {TABLE} {change}"))
        if first == "run":
            # read_only: in a transaction (a lone read would be re-run by asyncpg itself)
            ran = [await named.run(_projected, read_only=True) for _ in range(CONNECTIONS)]
            assert ran == [expected[1]] * CONNECTIONS, (change, ran)
        seen = await _on_every_connection(named, _reads)
        for result in seen:
            if isinstance(result, Retryable):
                retryable += 1
            else:
                assert result == expected, (change, result)
        ran = [await named.run(_reads) for _ in range(2 * CONNECTIONS)]
        assert all(r == expected for r in ran), (change, ran)
        assert await _on_every_connection(named, _reads) == [expected] * CONNECTIONS
    # The cached statements were refused at least once (else nothing was tested).
    assert retryable >= 1
    async with named.engine.begin() as connection:
        await connection.execute(text(f"ALTER TABLE {TABLE} DROP COLUMN v"))
    with pytest.raises(DatabaseError) as raised:
        await named.run(_reads)
    assert raised.value.sqlstate == "42703"  # undefined column: clear, not retried forever


BY_KEY = f"SELECT v FROM {SCHEMA}.keyed WHERE id = $1"
BIG = 3_000_000_000  # above int4


@pytest.mark.parametrize("path", ["sqlalchemy", "driver"])
async def test_a_key_widened_to_bigint_is_read_after_one_failure(
    named: Database, path: str
) -> None:
    """A named statement keeps its parameter types: after integer -> bigint, one prepared
    with an int4 key cannot encode a key above 2**31. The failure marks the caches
    stale (`harbordb.statements`): that call fails with a DatabaseError, and the next
    read on every connection prepares afresh and finds the row. Textual statements,
    through SQLAlchemy and through the projections' driver path: ORM statements and
    projections cast a key to the model's declared type (``$1::INTEGER``), named
    statements or not, until the model says BigInteger."""

    async def read(key: int) -> Callable[[UnitOfWork], Awaitable[int | None]]:
        async def on(uow: UnitOfWork) -> int | None:
            if path == "sqlalchemy":
                return await uow.session.scalar(text(BY_KEY.replace("$1", ":key")), {"key": key})
            rows = await driver.fetch(await driver.held(uow), BY_KEY, [key])
            return int(rows[0][0]) if rows else None

        return on

    table = f"{SCHEMA}.keyed"
    async with named.engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {table} (id integer PRIMARY KEY, v int)"))
        await connection.execute(text(f"INSERT INTO {table} VALUES (1, 42)"))
    for _ in range(2):  # prepared, then run from the caches
        assert await _on_every_connection(named, await read(1)) == [42] * CONNECTIONS
    async with named.engine.begin() as connection:
        await connection.execute(text(f"ALTER TABLE {table} ALTER COLUMN id TYPE bigint"))
        await connection.execute(text(f"INSERT INTO {table} VALUES ({BIG}, 43)"))
    first = await _on_every_connection(named, await read(BIG))
    assert all(r == 43 or isinstance(r, DatabaseError) for r in first), first
    assert any(isinstance(r, DatabaseError) for r in first)  # the stale statements were hit
    assert await _on_every_connection(named, await read(BIG)) == [43] * CONNECTIONS
    assert await _on_every_connection(named, await read(1)) == [42] * CONNECTIONS


async def test_a_repeated_statement_costs_one_round_trip(
    named: Database, database: Database
) -> None:
    """Named: prepared once per connection, then one round trip (ORM and projection);
    the default (caches off): two every time."""
    for db, trips_per_read in ((named, 1), (database, 2)):
        async with db.unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1"))  # begins
            await uow.session.scalar(select(Gauge.v).where(Gauge.id == 1))
            await READINGS.get(uow, 1)
            with count_round_trips() as orm:
                assert await uow.session.scalar(select(Gauge.v).where(Gauge.id == 1)) == 42
            with count_round_trips() as projected:
                assert await READINGS.get(uow, 1) == Reading(1, 42)
            assert (orm[0], projected[0]) == (trips_per_read, trips_per_read), db
            names = await uow.session.scalars(
                text(
                    "SELECT name FROM pg_prepared_statements "
                    "WHERE statement LIKE 'SELECT%' AND statement LIKE :table"
                ),
                {"table": f"%{SCHEMA}.gauges%"},
            )
            prepared = list(names)
            if db is named:  # one per statement: SQLAlchemy's and asyncpg's caches
                assert len(prepared) == 2, prepared
            else:
                assert prepared == []


async def test_a_0a000_that_is_not_a_cached_plan_is_not_retryable(named: Database) -> None:
    """The mapping is by asyncpg's class for the cached-plan error, not by the SQLSTATE
    0A000 (feature_not_supported) the server sends for it and for much else."""
    calls = 0

    async def unsupported(uow: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        await uow.session.execute(text(f"SELECT count(*) FROM {TABLE} FOR UPDATE"))

    with pytest.raises(DatabaseError) as raised:
        await named.run(unsupported)
    assert raised.value.sqlstate == "0A000"
    assert not isinstance(raised.value, Retryable)
    assert calls == 1


@pytest.mark.pgbouncer
async def test_refused_through_pgbouncer_without_the_callers_word(pgbouncer: PgBouncer) -> None:
    """PgBouncer 1.18 (this machine's) tracks no prepared statements in transaction mode:
    the setting is refused before any connection. A pooler that does (1.21+ with
    max_prepared_statements) cannot be tested here."""
    with pytest.raises(ConfigurationError, match="pooler_prepared_statements=True"):
        Database(pgbouncer.url, pooler="external", named_statements=True)


def test_dialect_members_used_are_still_there() -> None:
    """`harbordb.driver` marks the engine's caches stale through the asyncpg
    dialect's non-public invalidation, as SQLAlchemy does: fail loudly if it changes."""
    for member in DIALECT_MEMBERS:
        assert hasattr(PGDialect_asyncpg, member), member
    assert callable(PGDialect_asyncpg._invalidate_schema_cache)
