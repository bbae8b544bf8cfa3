"""Read replicas on a real streaming standby, directly and through PgBouncer.

Where each unit of work ran is asked of the server itself (``pg_is_in_recovery()``
and the ``port`` setting: the standby listens on a port of its own), never taken
from harbordb's bookkeeping. Replay is paused with ``pg_wal_replay_pause()`` to
make the replica stale on purpose.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import asyncpg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import delete, select, text
from tests.library.models import Author, Book, BookStatus

from harbordb import Database, Timeout, UnitOfWork
from harbordb.db import asyncpg_dsn
from harbordb.observability import instrument
from harbordb.testing.cluster import PgBouncer, PostgresCluster
from harbordb.testing.plugin import server_dir
from harbordb.testing.standby import Standby, start_standby

DIRECT_AND_POOLED = ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)]
WHERE = text("SELECT pg_is_in_recovery(), current_setting('port')::int")
TABLE = "replica_notes"

MakeDatabase = Callable[..., Database[Any]]


def _port(cluster: PostgresCluster) -> int:
    return int(parse_qs(urlsplit(cluster.url).query)["port"][0])


@pytest.fixture(scope="module")
async def _notes_table(migrated_url: str, pg_replica: Standby) -> AsyncIterator[None]:
    admin = await asyncpg.connect(asyncpg_dsn(migrated_url))
    await admin.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (tag text PRIMARY KEY)")
    await admin.execute(f"GRANT SELECT ON {TABLE} TO PUBLIC")
    try:
        yield
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await admin.close()


@pytest.fixture(params=DIRECT_AND_POOLED)
async def make_database(
    request: pytest.FixtureRequest,
    migrated_url: str,
    pg_replica: Standby,
    harbordb_database_options: dict[str, Any],
    _notes_table: None,
) -> AsyncIterator[MakeDatabase]:
    """``make_database(**options)``: a `Database` on the primary with `pg_replica` as its
    replica, both direct or both through a PgBouncer of their own."""
    made: list[Database[Any]] = []
    if request.param == "direct":
        urls, pooler = (migrated_url, pg_replica.url), "none"
    else:
        primary: PgBouncer = request.getfixturevalue("pgbouncer")
        replica: PgBouncer = request.getfixturevalue("replica_pgbouncer")
        urls, pooler = (primary.url, replica.url), "external"

    def make(**options: Any) -> Database[Any]:
        settings = {"replica_retry_after": 0.2, "replica_wait": 5.0, **options}
        database = Database(
            urls[0], pooler=pooler, replicas=[urls[1]], **harbordb_database_options, **settings
        )
        made.append(database)
        return database

    # A test that killed the replica may leave PgBouncer waiting out server_login_retry.
    await _until_on_replica(make(), pg_replica)
    yield make
    for database in made:
        await database.dispose()


async def _where(db: Database[Any], **options: Any) -> str:
    """ "replica" or "primary": what the server that ran the unit of work says it is."""
    async with db.unit_of_work(**options) as uow:
        in_recovery, _port = (await uow.session.execute(WHERE)).one()
    return "replica" if in_recovery else "primary"


async def _until_on_replica(db: Database[Any], replica: Standby) -> None:
    """Until a read runs on `replica` (PgBouncer waits server_login_retry after a restart)."""
    with anyio.fail_after(60):
        while True:
            async with db.unit_of_work(read_only=True) as uow:
                in_recovery, port = (await uow.session.execute(WHERE)).one()
            if in_recovery:
                assert port == replica.port
                return
            await anyio.sleep(0.1)


async def _write_note(db: Database[Any]) -> str:
    tag = uuid.uuid4().hex
    async with db.unit_of_work() as uow:
        await uow.session.execute(text(f"INSERT INTO {TABLE} VALUES (:tag)"), {"tag": tag})
        assert (await uow.session.execute(WHERE)).one()[0] is False
        await uow.commit()
    return tag


async def _read_note(db: Database[Any], tag: str, **options: Any) -> tuple[str, bool]:
    """(where the read ran, whether it saw the note)."""
    async with db.unit_of_work(read_only=True, **options) as uow:
        in_recovery, _port = (await uow.session.execute(WHERE)).one()
        found = await uow.session.scalar(
            text(f"SELECT count(*) FROM {TABLE} WHERE tag = :tag"), {"tag": tag}
        )
    return ("replica" if in_recovery else "primary"), found == 1


@asynccontextmanager
async def _replay_paused(replica: Standby) -> AsyncIterator[asyncpg.Connection]:
    """Replay paused on `replica` (resumed on exit); yields a superuser connection to it."""
    admin = await asyncpg.connect(asyncpg_dsn(replica.admin_url))
    try:
        await admin.execute("SELECT pg_wal_replay_pause()")
        with anyio.fail_after(30):
            while True:
                if await admin.fetchval("SELECT pg_get_wal_replay_pause_state()") == "paused":
                    break
                await anyio.sleep(0.01)
        yield admin
    finally:
        await admin.execute("SELECT pg_wal_replay_resume()")
        await admin.close()


@pytest.fixture
def killed_replica(pg_replica: Standby) -> Iterator[Standby]:
    """`pg_replica`, started again after the test if the test left it killed."""
    try:
        yield pg_replica
    finally:
        with suppress(Exception):  # it was running: start refuses
            pg_replica.start()


async def test_reads_go_to_the_replica_and_writes_to_the_primary(
    make_database: MakeDatabase, pg_cluster: PostgresCluster, pg_replica: Standby
) -> None:
    db = make_database()
    for _ in range(3):
        async with db.unit_of_work(read_only=True) as uow:
            assert tuple((await uow.session.execute(WHERE)).one()) == (True, pg_replica.port)
        async with db.unit_of_work() as uow:
            assert tuple((await uow.session.execute(WHERE)).one()) == (False, _port(pg_cluster))

    async def where(uow: UnitOfWork) -> tuple[bool, int]:
        in_recovery, port = (await uow.session.execute(WHERE)).one()
        return in_recovery, port

    assert await db.run(where, read_only=True) == (True, pg_replica.port)
    assert await db.run(where) == (False, _port(pg_cluster))
    assert db.replicas is not None
    status = db.replicas.status()
    assert status.replicas[0].reads >= 4
    assert status.replicas[0].healthy
    assert status.primary >= 4
    assert status.fallbacks == 0


async def test_read_your_writes_with_replay_paused(
    make_database: MakeDatabase, pg_replica: Standby
) -> None:
    writer = make_database()
    other = make_database(replica_wait=0.3)  # another process: shares only the token string
    async with _replay_paused(pg_replica):
        tag = await _write_note(writer)
        assert writer.replicas is not None
        token = writer.replicas.last_token()
        assert token is not None
        assert token == writer.replicas.latest_token()
        # Without the token, the other process reads the paused (stale) replica.
        assert await _read_note(other, tag) == ("replica", False)
        # With it, or within the writing Database, the read waits, then goes to the primary.
        assert await _read_note(other, tag, after=token) == ("primary", True)
        fast_writer = make_database(replica_wait=0.3)
        fast_tag = await _write_note(fast_writer)
        assert await _read_note(fast_writer, fast_tag) == ("primary", True)
    # Replay resumed: the replica serves the token once it has replayed it.
    assert await _read_note(other, tag, after=token) == ("replica", True)
    assert await _read_note(writer, tag) == ("replica", True)
    assert other.replicas is not None
    assert other.replicas.status().fallbacks >= 1


async def test_a_read_waits_for_the_replica_to_replay_the_token(
    make_database: MakeDatabase, pg_replica: Standby
) -> None:
    writer, reader = make_database(), make_database(replica_wait=30.0)
    results: list[tuple[str, bool]] = []
    async with anyio.create_task_group() as tasks, _replay_paused(pg_replica) as admin:
        tag = await _write_note(writer)
        assert writer.replicas is not None
        token = writer.replicas.last_token()
        assert token is not None

        async def read() -> None:
            results.append(await _read_note(reader, tag, after=token))

        tasks.start_soon(read)
        assert reader.replicas is not None
        with anyio.fail_after(30):
            while True:
                if reader.replicas.status().waits:
                    break
                await anyio.sleep(0.01)
        await anyio.sleep(2.5)  # longer than one probe may take (PROBE_TIMEOUT)
        assert results == []  # still waiting for the replay
        await admin.execute("SELECT pg_wal_replay_resume()")
    assert results == [("replica", True)]


async def test_a_lagging_replica_is_skipped_until_it_catches_up(
    make_database: MakeDatabase, pg_replica: Standby
) -> None:
    writer = make_database()
    strict = make_database(replica_max_lag=0.3)
    lenient = make_database(replica_max_lag=3600)
    async with _replay_paused(pg_replica):
        assert await _where(strict, read_only=True) == "replica"
        await _write_note(writer)
        with anyio.fail_after(30):  # the strict reader moves to the primary once lag > 0.3 s
            while True:
                if await _where(strict, read_only=True) == "primary":
                    break
                await anyio.sleep(0.05)
        assert strict.replicas is not None
        lag = strict.replicas.status().replicas[0].lag
        assert lag is not None
        assert lag > 0.3
        assert await _where(lenient, read_only=True) == "replica"
    await _until_on_replica(strict, pg_replica)
    assert strict.replicas.status().replicas[0].lag == 0.0


async def test_rls_and_timeouts_apply_on_the_replica(
    make_database: MakeDatabase, pg_replica: Standby
) -> None:
    db = make_database()
    tag = uuid.uuid4().hex
    async with db.unit_of_work() as uow:
        author = Author(email=f"replica-{tag}@example.com", name="Ada")
        uow.session.add(author)
        await uow.flush()
        uow.session.add_all(
            [
                Book(author_id=author.id, isbn=f"{status}-{tag}", title="t", price_cents=1,
                     status=status)
                for status in (BookStatus.DRAFT, BookStatus.PUBLISHED)
            ]
        )  # fmt: skip
        await uow.commit()
    try:

        async def visible(**options: Any) -> tuple[bool, str, list[str]]:
            async with db.unit_of_work(read_only=True, role="reader", **options) as uow:
                in_recovery, _port = (await uow.session.execute(WHERE)).one()
                user = await uow.session.scalar(text("SELECT current_user"))
                rows = await uow.session.scalars(
                    select(Book.isbn).where(Book.author_id == author.id).order_by(Book.isbn)
                )
                return in_recovery, user, list(rows)

        # Read your writes: it waited for the replay, then ran on the replica.
        assert await visible() == (True, "library_reader", [f"published-{tag}"])
        mine = await visible(claims={"sub": str(author.id)})
        assert mine == (True, "library_reader", [f"draft-{tag}", f"published-{tag}"])

        observed: list[object] = []

        async def sleep_on_the_replica() -> None:
            async with db.unit_of_work(read_only=True, statement_timeout=0.1) as uow:
                observed.append((await uow.session.execute(WHERE)).one()[0])
                observed.append(await uow.session.scalar(text("SHOW statement_timeout")))
                await uow.session.execute(text("SELECT pg_sleep(5)"))

        with pytest.raises(Timeout):
            await sleep_on_the_replica()
        assert observed == [True, "100ms"]
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(delete(Book).where(Book.author_id == author.id))
            await uow.session.execute(delete(Author).where(Author.id == author.id))
            await uow.commit()


async def test_a_killed_replica_under_read_load_fails_no_read(
    make_database: MakeDatabase, killed_replica: Standby
) -> None:
    db = make_database()
    seen = {"replica": 0, "primary": 0}
    phase = {"now": "before"}
    by_phase: dict[str, dict[str, int]] = {
        name: {"replica": 0, "primary": 0} for name in ("before", "killed", "restarted")
    }
    errors: list[BaseException] = []
    stop = anyio.Event()

    async def read(uow: UnitOfWork) -> str:
        in_recovery, _port = (await uow.session.execute(WHERE)).one()
        await uow.session.scalar(text("SELECT count(*) FROM pg_class"))
        return "replica" if in_recovery else "primary"

    async def reader() -> None:
        while not stop.is_set():
            current = phase["now"]
            try:
                where = await db.run(read, read_only=True)
            except Exception as exc:
                errors.append(exc)
                stop.set()  # fail fast: the test is lost
                return
            seen[where] += 1
            by_phase[current][where] += 1

    async def until(count: Callable[[], int], at_least: int) -> None:
        with anyio.fail_after(90):
            while True:
                if count() >= at_least or stop.is_set():
                    return
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as tasks:
        for _ in range(32):
            tasks.start_soon(reader)
        await until(lambda: by_phase["before"]["replica"], 100)
        phase["now"] = "killed"
        await anyio.to_thread.run_sync(killed_replica.kill)
        await until(lambda: by_phase["killed"]["primary"], 200)
        phase["now"] = "restarted"
        await anyio.to_thread.run_sync(killed_replica.start)
        await until(lambda: by_phase["restarted"]["replica"], 50)
        stop.set()
    assert errors == []
    assert by_phase["before"]["replica"] >= 100
    assert by_phase["killed"]["primary"] >= 200
    assert by_phase["restarted"]["replica"] >= 50


async def test_unit_of_work_blocks_fall_back_while_the_replica_is_down(
    make_database: MakeDatabase, killed_replica: Standby
) -> None:
    db = make_database()
    assert await _where(db, read_only=True) == "replica"
    await anyio.to_thread.run_sync(killed_replica.kill)
    for _ in range(20):
        assert await _where(db, read_only=True) == "primary"
    assert db.replicas is not None
    assert db.replicas.status().fallbacks == 20  # every read fell back, none failed
    await anyio.to_thread.run_sync(killed_replica.start)
    await _until_on_replica(db, killed_replica)


@pytest.fixture(scope="module")
def second_replica(pg_cluster: PostgresCluster, pg_replica: Standby) -> Iterator[Standby]:
    """Another standby of the same primary, on a port of its own."""
    with server_dir("second-replica") as base:
        standby = start_standby(
            pg_cluster, base, cluster_name="harbordb_standby_2", port=pg_replica.port + 1
        )
        try:
            yield standby
        finally:
            standby.stop()


async def test_reads_take_turns_and_skip_a_dead_replica(
    migrated_url: str,
    pg_replica: Standby,
    second_replica: Standby,
    harbordb_database_options: dict[str, Any],
) -> None:
    """Round robin over two standbys (direct); with one killed, reads go to the other."""
    urls = [pg_replica.url, second_replica.url]
    async with Database(
        migrated_url, replicas=urls, replica_retry_after=0.2, **harbordb_database_options
    ) as db:

        async def ports(reads: int) -> list[int]:
            seen = []
            for _ in range(reads):
                async with db.unit_of_work(read_only=True) as uow:
                    in_recovery, port = (await uow.session.execute(WHERE)).one()
                assert in_recovery is True
                seen.append(port)
            return seen

        turns = await ports(6)
        assert sorted(set(turns)) == [pg_replica.port, second_replica.port]
        assert all(a != b for a, b in itertools.pairwise(turns))  # they alternate
        await anyio.to_thread.run_sync(second_replica.kill)
        try:
            assert set(await ports(10)) == {pg_replica.port}
            assert db.replicas is not None
            assert db.replicas.status().fallbacks == 0
        finally:
            await anyio.to_thread.run_sync(second_replica.start)
        with anyio.fail_after(60):
            while True:
                if second_replica.port in await ports(2):
                    break
                await anyio.sleep(0.1)


async def test_routing_counts_and_lag_are_metrics(make_database: MakeDatabase) -> None:
    reader = InMemoryMetricReader()
    db = make_database()
    instrumentation = instrument(
        db, traces=False, meter_provider=MeterProvider(metric_readers=[reader]), pool_name="r"
    )
    try:
        for _ in range(3):
            assert await _where(db, read_only=True) == "replica"
        assert await _where(db) == "primary"
        data = reader.get_metrics_data()
        assert data is not None
        points = {
            metric.name: list(metric.data.data_points)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        assert db.replicas is not None
        url = db.replicas.status().replicas[0].url
        (reads,) = points["harbordb.replicas.reads"]
        assert reads.value >= 3
        assert reads.attributes == {"harbordb.pool.name": "r", "harbordb.replica": url}
        (lag,) = points["harbordb.replicas.lag"]
        assert lag.value >= 0
        assert points["harbordb.replicas.healthy"][0].value == 1
        assert points["harbordb.replicas.primary"][0].value >= 1
        assert points["harbordb.replicas.fallbacks"][0].value == 0
    finally:
        instrumentation.remove()
