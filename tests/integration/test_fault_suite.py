"""The fault suite: a server restart under write load, and cancellations at random points.

Each test is bounded in time, runs directly and through PgBouncer, and prints
its figures (``FAULT ...`` lines; the README's Guarantees quote the last run).
No wall-clock time is asserted.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from tests.integration.faults import CREATE, TABLE, start_server, stop_server, write, written

from harbordb import CommitUncertain, Database, HarborError, UnitOfWork
from harbordb.testing.cluster import PostgresCluster, start_pgbouncer, start_postgres

WRITERS = 20


@pytest.fixture
async def restartable(server_tmp: Path) -> AsyncIterator[PostgresCluster]:
    cluster = await anyio.to_thread.run_sync(start_postgres, server_tmp / "pg")
    try:
        async with Database(cluster.url) as db, db.unit_of_work() as uow:
            await uow.session.execute(text(CREATE))
            await uow.commit()
        yield cluster
    finally:
        await anyio.to_thread.run_sync(cluster.stop)


class Ledger:
    """What the callers were told, per request key."""

    def __init__(self) -> None:
        self.acknowledged: set[str] = set()
        self.uncertain: set[str] = set()
        self.errors: Counter[str] = Counter()
        self.foreign: list[BaseException] = []  # anything not a HarborError
        self.successes: list[float] = []  # anyio clock times of acknowledged commits
        self.succeeded = anyio.Event()


async def _writer(db: Database, prefix: str, ledger: Ledger, stop: anyio.Event) -> None:
    n = 0
    while not stop.is_set():
        key = f"{prefix}{uuid.uuid4().hex}-{n}"
        n += 1
        try:
            await db.run(partial(_write, key=key), retries=2, timeout=2)
        except CommitUncertain:
            ledger.uncertain.add(key)
            ledger.errors["CommitUncertain"] += 1
        except HarborError as exc:
            ledger.errors[type(exc).__name__] += 1
            await anyio.sleep(0.02)
        except Exception as exc:
            ledger.foreign.append(exc)
            await anyio.sleep(0.02)
        else:
            ledger.acknowledged.add(key)
            ledger.successes.append(anyio.current_time())
            ledger.succeeded.set()


async def _write(uow: UnitOfWork, *, key: str) -> None:
    await write(uow, key)


@pytest.mark.parametrize("via", ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
async def test_a_restart_under_write_load_loses_no_acknowledged_write(
    restartable: PostgresCluster, server_tmp: Path, via: str
) -> None:
    bouncer = None
    if via == "pgbouncer":
        bouncer = await anyio.to_thread.run_sync(
            partial(start_pgbouncer, pool_size=10), restartable, server_tmp / "pgb"
        )
        db: Database = Database(bouncer.url, pooler="external")
    else:
        db = Database(restartable.url, pool_size=10, max_overflow=0, pool_timeout=2)
    prefix = f"restart-{uuid.uuid4().hex[:8]}-"
    ledger = Ledger()
    stop = anyio.Event()
    try:
        async with db, anyio.create_task_group() as tasks:
            for _ in range(WRITERS):
                tasks.start_soon(_writer, db, prefix, ledger, stop)
            await anyio.sleep(1.0)
            before = len(ledger.acknowledged)
            await anyio.to_thread.run_sync(stop_server, restartable)
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(start_server, restartable)
            back = anyio.current_time()
            ledger.succeeded = anyio.Event()
            with anyio.fail_after(60):  # bounded: a minute at most for success to resume
                await ledger.succeeded.wait()
            recovered = min(at for at in ledger.successes if at > back) - back
            await anyio.sleep(1.0)
            stop.set()
        async with Database(restartable.url) as check, check.unit_of_work() as uow:
            rows = await written(uow, prefix)
    finally:
        if bouncer is not None:
            await anyio.to_thread.run_sync(bouncer.stop)
    assert ledger.foreign == []  # every failure was a HarborError
    assert before > 0
    assert sum(ledger.errors.values()) > 0  # the restart was felt
    lost = ledger.acknowledged - set(rows)
    phantom = set(rows) - ledger.acknowledged - ledger.uncertain
    assert len(rows) == len(set(rows))  # none written twice
    assert lost == set()
    assert phantom == set()
    print(
        f"\nFAULT restart {via}: {len(ledger.acknowledged)} acknowledged writes, 0 lost, "
        f"0 twice; errors {dict(ledger.errors)}; uncertain committed "
        f"{len(ledger.uncertain & set(rows))}/{len(ledger.uncertain)}; "
        f"first success {recovered:.2f} s after the server was back"
    )


CANCELLATIONS, BATCH = 500, 10
SLOW_COMMIT = (
    "CREATE OR REPLACE FUNCTION fault_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN PERFORM pg_sleep(0.004); RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS fault_slow_commit ON fault_writes",
    "CREATE CONSTRAINT TRIGGER fault_slow_commit AFTER INSERT ON fault_writes "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_slow_commit()",
)


@pytest.fixture(scope="module")
async def slow_commit_table(database: Database) -> AsyncIterator[None]:
    """fault_writes on the suite's database, with a COMMIT that takes ~4 ms (a deferred
    trigger), so that random cancellations often land during COMMIT."""
    async with database.engine.begin() as connection:
        await connection.execute(text(CREATE))
        for statement in SLOW_COMMIT:
            await connection.execute(text(statement))
        await connection.execute(text(f"GRANT ALL ON {TABLE} TO PUBLIC"))
    yield
    async with database.engine.begin() as connection:
        await connection.execute(text(f"DROP TABLE {TABLE}"))
        await connection.execute(text("DROP FUNCTION fault_slow_commit()"))


@pytest.mark.usefixtures("slow_commit_table")
@pytest.mark.parametrize("via", ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
async def test_cancellations_at_random_points_leak_nothing_and_hide_no_commit(
    migrated_url: str, database: Database, request: pytest.FixtureRequest, via: str
) -> None:
    name = f"harbordb-cancel-{uuid.uuid4().hex[:8]}"
    if via == "direct":
        db: Database = Database(migrated_url, pool_size=5, max_overflow=0, application_name=name)
    else:
        url = request.getfixturevalue("pgbouncer").url
        db = Database(url, pooler="external", application_name=name)
    prefix = f"cancel-{uuid.uuid4().hex[:8]}-"
    outcomes: dict[str, str] = {}
    rng = random.Random(10)

    async def one(key: str, delay: float) -> None:
        outcome = "cancelled"
        with anyio.move_on_after(delay):
            try:
                async with db.unit_of_work() as uow:
                    await write(uow, key)
                    await uow.commit()
                outcome = "acknowledged"
            except CommitUncertain:
                outcome = "uncertain"
            except HarborError as exc:
                outcome = type(exc).__name__
        outcomes[key] = outcome

    async with db:
        # How long a batch takes uncancelled here and now: delays are drawn up to
        # twice that, so they land before, during and after COMMIT on any machine.
        started = anyio.current_time()
        async with anyio.create_task_group() as tasks:
            for n in range(BATCH):
                tasks.start_soon(one, f"{prefix}warm-{n}", 60.0)
        span = anyio.current_time() - started
        for batch in range(CANCELLATIONS // BATCH):
            async with anyio.create_task_group() as tasks:
                for n in range(BATCH):
                    delay = rng.uniform(0.0, 2 * span)
                    tasks.start_soon(one, f"{prefix}{batch}-{n}", delay)
        checked_out = db.engine.pool.checkedout() if via == "direct" else 0  # type: ignore[attr-defined]
    async with database.unit_of_work() as uow:
        rows = set(await written(uow, prefix))
        activity = text(
            "SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%'), count(*) "
            "FROM pg_stat_activity WHERE application_name = :name"
        )
        idle_in_transaction, sessions = (await uow.session.execute(activity, {"name": name})).one()
    counts = Counter(outcomes.values())
    hidden = {key for key, outcome in outcomes.items() if outcome == "cancelled"} & rows
    lost = {key for key, outcome in outcomes.items() if outcome == "acknowledged"} - rows
    assert len(outcomes) == CANCELLATIONS + BATCH
    assert set(counts) <= {"acknowledged", "uncertain", "cancelled"}, counts
    assert counts["cancelled"] > 0
    assert counts["acknowledged"] > 0
    assert hidden == set()  # no plain cancellation hid a commit
    assert lost == set()
    assert checked_out == 0
    assert idle_in_transaction == 0
    if via == "direct":
        assert sessions == 0  # disposed: nothing left open on the server
    uncertain_committed = sum(1 for k, o in outcomes.items() if o == "uncertain" and k in rows)
    print(
        f"\nFAULT cancellations {via}: {dict(counts)}; uncertain that had committed "
        f"{uncertain_committed}/{counts['uncertain']}; 0 hidden commits, 0 leaked "
        f"connections, 0 idle in transaction"
    )
