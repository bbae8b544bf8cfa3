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

from benchmarks.core import Case, Lab, Op, Variant, Workload
from benchmarks.servers import POOL_SIZE
from harbor_commerce.uow import CommerceWork, commerce_database
from harbordb import Database


def _read(db: Database[CommerceWork], product_id: int) -> Op:
    async def op() -> int:
        async with db.unit_of_work() as uow:
            product = await uow.products.get(product_id, load=("variants",))
            return 1 + len(product.variants)

    return op


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
    return [
        Case(
            f"concurrency {tasks}",
            {"concurrency": tasks},
            [
                Variant(key, _read(db, product), concurrency=tasks, database=db)
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
