"""The expiry sweeper: concurrent sweepers, the long-running loop, stopping, the CLI."""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio
import pytest
from sqlalchemy import func, select, text, update

from harbor_commerce.inventory import Inventory
from harbor_commerce.models import ReservationStatus, StockReservation, Variant
from harbor_commerce.seed import seed_product
from harbor_commerce.sweeper import run_sweeper, sweep_once
from harbordb import Database

SEED_PREFIX = "sweep"  # these tests commit: conftest.py deletes rows seeded under it


INITIAL = 1_000


async def seed_expired(db: Database, *, variants: int, reservations: int) -> tuple[list[int], str]:
    """Variants holding `reservations` expired active reservations between them.

    Stock is seeded as if each had been reserved: INITIAL minus what is held.
    Returns the variant ids and the order_ref prefix.
    """
    await Inventory(db).release_expired(batch_size=10_000)  # earlier tests' leftovers
    tag = uuid.uuid4().hex[:12]
    held = [0] * variants
    rows = []
    past = datetime.now(UTC) - timedelta(hours=1)
    for i in range(reservations):
        qty = 1 + i % 3
        held[i % variants] += qty
        rows.append((i % variants, qty, f"{SEED_PREFIX}-{tag}-{i}"))
    product = await seed_product(db, SEED_PREFIX, [INITIAL - qty for qty in held])
    ids = [variant.id for variant in product.variants]
    async with db.unit_of_work() as uow:
        await uow.reservations.add_many(
            StockReservation(variant_id=ids[n], qty=qty, order_ref=ref, expires_at=past)
            for n, qty, ref in rows
        )
        await uow.commit()
    return ids, f"{SEED_PREFIX}-{tag}-"


async def statuses(db: Database, prefix: str) -> dict[ReservationStatus, int]:
    query = (
        select(StockReservation.status, func.count())
        .where(StockReservation.order_ref.startswith(prefix))
        .group_by(StockReservation.status)
    )
    async with db.unit_of_work(read_only=True) as uow:
        return dict((await uow.session.execute(query)).all())  # type: ignore[arg-type]


async def stocks(db: Database, variant_ids: list[int]) -> list[int]:
    async with db.unit_of_work(read_only=True) as uow:
        found = await uow.variants.get_many(variant_ids, load=())
        return [variant.stock_qty for variant in found]


# -- two sweepers at once ---------------------------------------------------------


async def test_two_concurrent_sweepers_release_each_reservation_once(db: Database) -> None:
    variant_ids, prefix = await seed_expired(db, variants=10, reservations=1_000)
    released: list[list[int]] = [[], []]

    async def sweeper(number: int) -> None:
        inventory = Inventory(db)
        while True:  # batch by batch, recording each, until a batch comes back short
            count = await inventory.release_expired(batch_size=25, max_batches=1)
            released[number].append(count)
            if count < 25:
                return

    start = anyio.Event()

    async def run(number: int) -> None:
        await start.wait()
        await sweeper(number)

    async with anyio.create_task_group() as group:
        group.start_soon(run, 0)
        group.start_soon(run, 1)
        await anyio.lowlevel.checkpoint()
        start.set()

    assert sum(released[0]) + sum(released[1]) == 1_000
    assert sum(released[0]) > 0, released  # both really swept, side by side
    assert sum(released[1]) > 0, released
    assert await statuses(db, prefix) == {ReservationStatus.EXPIRED: 1_000}
    assert await stocks(db, variant_ids) == [INITIAL] * 10  # restored once, not twice


# -- the long-running loop --------------------------------------------------------


async def test_sweeper_loop_releases_what_expires_while_it_runs(database: Database) -> None:
    inventory = Inventory(database)
    first_ids, first = await seed_expired(database, variants=2, reservations=30)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            # Two loops side by side, batches smaller than the work: several rounds each.
            for _ in range(2):
                await group.start(partial(run_sweeper, inventory, interval=0.02, batch_size=7))
            await wait_until(database, first, {ReservationStatus.EXPIRED: 30})
            later = await inventory.reserve(first_ids[0], 5, f"{first}late")
            async with database.unit_of_work() as uow:
                await uow.session.execute(
                    update(StockReservation)
                    .where(StockReservation.id == later.id)
                    .values(expires_at=text("now() - interval '1 second'"))
                )
                await uow.commit()
            await wait_until(database, first, {ReservationStatus.EXPIRED: 31})
            group.cancel_scope.cancel()
    assert await stocks(database, first_ids) == [INITIAL, INITIAL]


async def wait_until(db: Database, prefix: str, wanted: dict[ReservationStatus, int]) -> None:
    """Poll the reservations' statuses (the caller bounds the wait)."""
    while True:
        if await statuses(db, prefix) == wanted:
            return
        await anyio.sleep(0.02)


async def test_cancelled_sweeper_finishes_the_batch_in_hand(
    database: Database,
    migrated_url: str,
    wait_for_lock_wait: Callable[[Database, str], Awaitable[None]],
) -> None:
    """Cancelled while its batch waits on a row lock, the sweeper commits that batch
    once the lock goes, then stops. An interrupted batch would leave all 40 active."""
    variant_ids, prefix = await seed_expired(database, variants=1, reservations=40)
    inventory = Inventory(database)
    sweeper_scope = anyio.CancelScope()
    stopped = anyio.Event()

    async def sweeper() -> None:
        with sweeper_scope:
            await run_sweeper(inventory, interval=60, batch_size=100)
        stopped.set()

    async with Database(migrated_url) as other, other.unit_of_work() as blocker:
        await blocker.session.execute(  # holds the variant row the batch must update
            update(Variant).where(Variant.id == variant_ids[0]).values(name="locked")
        )
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(sweeper)
                await wait_for_lock_wait(other, "WITH due AS")
                sweeper_scope.cancel()
                for _ in range(10):
                    await anyio.lowlevel.checkpoint()
                assert not stopped.is_set()  # still waiting on the lock, shielded
                await blocker.commit()
                await stopped.wait()
    assert await statuses(database, prefix) == {ReservationStatus.EXPIRED: 40}
    assert await stocks(database, variant_ids) == [INITIAL]


async def test_a_timed_out_round_is_logged_and_retried(
    database: Database, migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    variant_ids, prefix = await seed_expired(database, variants=1, reservations=5)
    inventory = Inventory(database, lock_timeout=0.05)
    async with Database(migrated_url) as other, other.unit_of_work() as blocker:
        await blocker.session.execute(
            update(Variant).where(Variant.id == variant_ids[0]).values(name="locked")
        )
        with caplog.at_level(logging.WARNING, logger="harbor_commerce.sweeper"):
            assert await sweep_once(inventory, batch_size=100) == 0
        assert "sweep failed (Timeout)" in caplog.text
        assert await statuses(database, prefix) == {ReservationStatus.ACTIVE: 5}
        await blocker.commit()
    assert await sweep_once(inventory, batch_size=100) == 5
    assert await stocks(database, variant_ids) == [INITIAL]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, "interval must be a positive"),
        ({"interval": float("inf")}, "interval must be a positive"),
        ({"batch_size": 0}, "batch_size must be between"),
    ],
)
async def test_sweeper_checks_its_arguments(
    database: Database, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await run_sweeper(Inventory(database), **kwargs)  # type: ignore[arg-type]


# -- harbor-commerce sweep ----------------------------------------------------------

CLI = [sys.executable, "-c", "import sys; from harbor_commerce.cli import main; sys.exit(main())"]


def cli_env(url: str) -> dict[str, str]:
    return {**os.environ, "HARBORDB_DATABASE_URL": url}


async def test_cli_sweep_once(database: Database, migrated_url: str) -> None:
    variant_ids, prefix = await seed_expired(database, variants=2, reservations=12)
    result = await anyio.run_process(
        [*CLI, "sweep", "--once", "--batch-size", "5"], env=cli_env(migrated_url), check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "released 12 expired reservation(s)" in result.stdout.decode()
    assert await statuses(database, prefix) == {ReservationStatus.EXPIRED: 12}
    assert await stocks(database, variant_ids) == [INITIAL, INITIAL]


@pytest.mark.pgbouncer
async def test_cli_sweep_runs_through_pgbouncer_until_sigterm(
    pooled_database: Database, pgbouncer: object
) -> None:
    variant_ids, prefix = await seed_expired(pooled_database, variants=1, reservations=8)
    url = pooled_database.engine.url.render_as_string(hide_password=False)
    env = {**cli_env(url), "HARBORDB_POOLER": "external"}
    async with await anyio.open_process(
        [*CLI, "sweep", "--interval", "0.05", "--batch-size", "3"], env=env
    ) as process:
        try:
            with anyio.fail_after(20):
                await wait_until(pooled_database, prefix, {ReservationStatus.EXPIRED: 8})
        finally:
            process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            await process.wait()
        assert process.stderr is not None
        err = b"".join([chunk async for chunk in process.stderr])
    assert process.returncode == 0, err.decode()[-2000:]
    assert "SIGTERM received" in err.decode()
    assert await stocks(pooled_database, variant_ids) == [INITIAL]
