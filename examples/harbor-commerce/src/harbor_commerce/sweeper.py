"""The expiry sweeper: a long-running task that releases lapsed reservations.

    async with anyio.create_task_group() as tg:
        await tg.start(partial(run_sweeper, inventory, interval=5.0))
        ...
        tg.cancel_scope.cancel()

Every round releases one batch (`Inventory.release_expired`); a full batch
means more are due, so the next round starts at once, otherwise the sweeper
sleeps `interval` seconds. Any number of sweepers may run at once: the batches
claim their rows with ``SKIP LOCKED`` and never overlap.

Stopping: cancellation never interrupts a batch. The batch in hand is
shielded and finishes (commits, or rolls back on a database error), then the
sweeper stops at its next pause. Give the `Inventory` a ``statement_timeout``
to bound how long that can take. A transient database error (conflict,
timeout, lost connection) is logged and retried next round; anything else
ends the sweeper.

The command line: ``harbor-commerce sweep`` (see `add_sweep_command`).
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from functools import partial
from typing import NoReturn

import anyio
from anyio.abc import TaskStatus

from harbor_commerce.inventory import MAX_BATCH_SIZE, Inventory
from harbor_commerce.uow import commerce_database
from harbordb.errors import HarborError, Retryable, Timeout, Unavailable

logger = logging.getLogger("harbor_commerce.sweeper")

DEFAULT_INTERVAL = 5.0
DEFAULT_BATCH_SIZE = 500

_TRANSIENT = (Retryable, Timeout, Unavailable)


async def run_sweeper(
    inventory: Inventory,
    *,
    interval: float = DEFAULT_INTERVAL,
    batch_size: int = DEFAULT_BATCH_SIZE,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Release expired reservations until cancelled (see the module docstring)."""
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise ValueError("interval must be a number of seconds")
    if not math.isfinite(interval) or interval <= 0:
        raise ValueError("interval must be a positive, finite number of seconds")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValueError("batch_size must be a whole number")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
    task_status.started()
    while True:
        released = await sweep_once(inventory, batch_size=batch_size)
        if released >= batch_size:
            await anyio.lowlevel.checkpoint()  # more are due; stay cancellable
        else:
            await anyio.sleep(interval)


async def sweep_once(inventory: Inventory, *, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """One shielded batch; how many it released (0 after a transient error, logged)."""
    with anyio.CancelScope(shield=True):
        try:
            released = await inventory.release_expired(batch_size=batch_size, max_batches=1)
        except _TRANSIENT as exc:
            logger.warning("sweep failed (%s), retrying next round: %s", type(exc).__name__, exc)
            return 0
    if released:
        logger.info("released %d expired reservation(s)", released)
    return released


# -- command line -----------------------------------------------------------------


def add_sweep_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``harbor-commerce sweep`` to the `harbordb` command's subparsers."""
    parser = subparsers.add_parser(
        "sweep",
        help="release expired stock reservations, continuously or once",
        description="Release expired stock reservations and restore their stock. Runs until "
        "SIGINT or SIGTERM (the batch in hand finishes first), or once with --once. The "
        "database comes from --database-url, else HARBORDB_DATABASE_URL or DATABASE_URL.",
    )
    parser.add_argument("--database-url", help="PostgreSQL URL (default: from the environment)")
    parser.add_argument(
        "--pooler",
        choices=("none", "external"),
        help="'external' behind PgBouncer or another transaction pooler (default: from "
        "HARBORDB_POOLER, else none)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help=f"seconds between rounds when nothing more is due (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"reservations per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--statement-timeout",
        type=float,
        default=30.0,
        help="seconds one batch statement may run (default 30); bounds the wait at shutdown",
    )
    parser.add_argument(
        "--once", action="store_true", help="release what is due now, in batches, and exit"
    )
    parser.set_defaults(handler=sweep_command)


def sweep_command(args: argparse.Namespace) -> int:
    """Run ``harbor-commerce sweep`` from parsed arguments; the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return anyio.run(_sweep_main, args)
    except (HarborError, ValueError) as exc:
        print(f"harbor-commerce sweep: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C while the batch in hand finishes
        return 130


async def _sweep_main(args: argparse.Namespace) -> int:
    async with commerce_database(args.database_url, pooler=args.pooler) as db:
        inventory = Inventory(db, statement_timeout=args.statement_timeout)
        if args.once:
            released = await inventory.release_expired(batch_size=args.batch_size)
            print(f"harbor-commerce sweep: released {released} expired reservation(s)")
            return 0
        async with anyio.create_task_group() as tg:
            await tg.start(_stop_on_signal, tg.cancel_scope)
            await tg.start(
                partial(run_sweeper, inventory, interval=args.interval, batch_size=args.batch_size)
            )
            print(
                f"harbor-commerce sweep: every {args.interval:g}s, batches of {args.batch_size}; "
                "SIGINT or SIGTERM stops",
                flush=True,
            )
    return 0


async def _stop_on_signal(
    scope: anyio.CancelScope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            logger.info(
                "%s received: stopping after the batch in hand", signal.Signals(signum).name
            )
            scope.cancel()
            return
