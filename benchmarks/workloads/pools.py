"""W6: pool modes under concurrency, on W1's read through the repository.

Three ways to reach PostgreSQL, each with at most `POOL_SIZE` server
connections: QueuePool straight to the server; NullPool through PgBouncer
(harbordb's `pooler="external"`: a new client connection per unit of work,
PgBouncer pools); QueuePool through PgBouncer (client connections kept, and
PgBouncer shares its server connections between transactions). At concurrency
C, C tasks run the read in a loop; latency is per read, throughput is reads
per second of wall time.

"queuepool-direct-sqlalchemy-wait" is the same QueuePool without harbordb's
first-come-first-served admission (`harbordb.pool`): tasks wait in
SQLAlchemy's own pool queue, where a returned connection goes to whichever
task asks next. Beyond 10 tasks a read's latency is mostly its wait for a
connection, so p50/p95/p99/max of the two variants at 64 tasks compare the
waits before and after.
"""

from __future__ import annotations

import time
import tracemalloc

from benchmarks.core import Case, Lab, Op, Variant, Workload
from benchmarks.results import percentile
from benchmarks.servers import POOL_SIZE
from harbor_commerce.uow import CommerceWork, commerce_database
from harbordb import Database

# The direct variants whose waits for a connection are reported, in the run's notes.
_WAIT_VARIANTS = ("queuepool-direct", "queuepool-direct-sqlalchemy-wait")


def _read(db: Database[CommerceWork], product_id: int, waits: list[int] | None = None) -> Op:
    async def op() -> int:
        started = time.perf_counter_ns()
        async with db.unit_of_work() as uow:
            # Entering = waiting for, and checking out, a connection; not recorded in
            # the instrumented run, which tracemalloc slows down many times over.
            if waits is not None and not tracemalloc.is_tracing():
                waits.append(time.perf_counter_ns() - started)
            product = await uow.products.get(product_id, load=("variants",))
            return 1 + len(product.variants)

    return op


def _wait_note(waits: dict[tuple[str, int], list[int]]) -> str:
    """p50/p95/p99/max of the time to enter a unit of work, per direct variant and task count."""
    parts = []
    for (key, tasks), samples in sorted(waits.items(), key=lambda item: (item[0][1], item[0][0])):
        if tasks <= POOL_SIZE or len(samples) <= tasks:
            continue
        ms = sorted(value / 1e6 for value in samples[tasks:])  # the first batch: warm-up
        figures = "/".join(f"{percentile(ms, q):.1f}" for q in (0.5, 0.95, 0.99)) + f"/{ms[-1]:.1f}"
        parts.append(f"{key} at {tasks} tasks {figures} ms ({len(ms)} waits)")
    return (
        f"W6 wait for a connection ({POOL_SIZE} connections; p50/p95/p99/max of the "
        f"timed rounds): " + "; ".join(parts)
    )


async def _cases(lab: Lab) -> list[Case]:
    bouncer = lab.target.bouncer_url
    if bouncer is None:  # the runner leaves W6 out then; this is a guard
        return []
    name = "harbordb-bench-w6"
    unfair = commerce_database(
        lab.target.direct_url,
        pooler="none",
        pool_size=POOL_SIZE,
        max_overflow=0,
        application_name=name,
    )
    unfair._gate = None  # SQLAlchemy's own wait: the baseline of the FIFO admission
    modes = {
        "queuepool-direct": commerce_database(
            lab.target.direct_url,
            pooler="none",
            pool_size=POOL_SIZE,
            max_overflow=0,
            application_name=name,
        ),
        "queuepool-direct-sqlalchemy-wait": unfair,
        "nullpool-pgbouncer": commerce_database(bouncer, pooler="external", application_name=name),
        "queuepool-pgbouncer": commerce_database(
            bouncer, pooler="none", pool_size=POOL_SIZE, max_overflow=0, application_name=name
        ),
    }
    for db in modes.values():
        lab.stack.push_async_callback(db.dispose)
    product = lab.dataset.product_id
    waits: dict[tuple[str, int], list[int]] = {
        (key, tasks): [] for key in _WAIT_VARIANTS for tasks in lab.sizes.concurrency
    }

    async def note_waits() -> None:  # runs when the lab closes, before the report
        if any(len(samples) for (_, tasks), samples in waits.items() if tasks > POOL_SIZE):
            lab.notes.append(_wait_note(waits))

    lab.stack.push_async_callback(note_waits)
    return [
        Case(
            f"concurrency {tasks}",
            {"concurrency": tasks},
            [
                Variant(
                    key, _read(db, product, waits.get((key, tasks))), concurrency=tasks, database=db
                )
                for key, db in modes.items()
            ],
        )
        for tasks in lab.sizes.concurrency
    ]


W6 = Workload(
    key="W6",
    title="pool modes at concurrency 1, 10 and 64",
    description=(
        f"W1's read (repository get with variants) from 1, 10 and 64 concurrent tasks: "
        f"QueuePool direct (FIFO admission, and SQLAlchemy's own wait), NullPool through "
        f"PgBouncer, QueuePool through PgBouncer; "
        f"{POOL_SIZE} server connections at most in every mode."
    ),
    unit="op",
    floor="queuepool-direct",
    build=_cases,
)
