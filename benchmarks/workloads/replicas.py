"""replicas: reads on the primary alone against primary + one streaming standby.

Opt-in (``--only replicas``): it starts a hot standby of the embedded server
(`harbordb.testing.standby.start_standby`), which an external server cannot
have. Every variant runs W1's read (a product with its variants) in a
read-only unit of work, direct to PostgreSQL, with the same pool settings:

- "64 tasks": throughput and latency with 64 concurrent readers. Both servers
  share this machine's cores, so the figure shows the router's overhead more
  than any added capacity; and one `Database` admits at most pool_size +
  max_overflow units of work at once, replicas or not.
- "1 task, caught up": the read alone on the primary, on the replica, and on the
  replica with a read-your-writes token it has already replayed.
- "1 task, write then read": an UPDATE committed, then the read, with and without
  a replica: the read waits for the replica to replay the write.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
from sqlalchemy import text

from benchmarks.core import Case, Lab, Op, Variant, Workload
from benchmarks.servers import POOL_SIZE
from harbor_commerce.uow import CommerceWork, commerce_database
from harbordb import Database
from harbordb.testing.cluster import PostgresCluster
from harbordb.testing.standby import start_standby

_TOUCH = text("UPDATE products SET name = name WHERE id = :id")


def _read(db: Database[CommerceWork], product_id: int, after: str | None = None) -> Op:
    async def op() -> int:
        async with db.unit_of_work(read_only=True, after=after) as uow:
            product = await uow.products.get(product_id, load=("variants",))
            return 1 + len(product.variants)

    return op


def _write_then_read(db: Database[CommerceWork], product_id: int) -> Op:
    read = _read(db, product_id)

    async def op() -> int:
        async with db.unit_of_work() as uow:
            await uow.session.execute(_TOUCH, {"id": product_id})
            await uow.commit()
        return await read()

    return op


async def _caught_up(db: Database[CommerceWork], product_id: int) -> str:
    """Commit once through `db`; return the token once the replica has replayed it."""
    await _write_then_read(db, product_id)()
    assert db.replicas is not None
    token = db.replicas.last_token()
    assert token is not None
    with anyio.fail_after(30):
        while True:
            async with db.unit_of_work(read_only=True, after=token) as uow:
                replica = await uow.session.scalar(text("SELECT pg_is_in_recovery()"))
            if replica:
                return token
            await anyio.sleep(0.05)


async def _cases(lab: Lab) -> list[Case]:
    if lab.target.server != "embedded":
        lab.notes.append("replicas skipped: a standby is started only for the embedded server.")
        return []
    url = lab.target.direct_url
    socket_dir = parse_qs(urlsplit(url).query)["host"][0]
    workdir = Path(tempfile.mkdtemp(prefix="harbordb-bench-standby-"))
    lab.stack.callback(shutil.rmtree, workdir, True)  # after the standby stops
    standby = await anyio.to_thread.run_sync(
        lambda: start_standby(PostgresCluster(url, url, socket_dir), workdir)
    )
    lab.stack.callback(standby.stop)
    options = {"pool_size": POOL_SIZE, "max_overflow": 0, "application_name": "harbordb-bench"}
    alone = commerce_database(url, **options)
    routed = commerce_database(url, replicas=[standby.url], **options)
    for db in (alone, routed):
        lab.stack.push_async_callback(db.dispose)
    product = lab.dataset.product_id
    token = await _caught_up(routed, product)
    reader = commerce_database(url, replicas=[standby.url], **options)  # no commits of its own
    lab.stack.push_async_callback(reader.dispose)
    tasks = 64
    return [
        Case(
            f"{tasks} tasks",
            {"concurrency": tasks},
            [
                Variant("primary-alone", _read(alone, product), concurrency=tasks, database=alone),
                Variant(
                    "primary+replica", _read(reader, product), concurrency=tasks, database=reader
                ),
            ],
        ),
        Case(
            "1 task, caught up",
            {"concurrency": 1},
            [
                Variant("primary-alone", _read(alone, product), database=alone),
                Variant("primary+replica", _read(reader, product), database=reader),
                Variant("replica-token", _read(reader, product, after=token), database=reader),
            ],
        ),
        Case(
            "1 task, write then read",
            {"concurrency": 1},
            [
                Variant("primary-alone", _write_then_read(alone, product), database=alone),
                Variant("primary+replica", _write_then_read(routed, product), database=routed),
            ],
        ),
    ]


REPLICAS = Workload(
    key="replicas",
    title="read replicas: primary alone vs primary + one streaming standby",
    description=(
        "W1's read in read-only units of work: 64 tasks on the primary alone and with a "
        "replica; one task, with a read-your-writes token already replayed; one task "
        f"writing then reading its write. Direct, {POOL_SIZE} connections per pool."
    ),
    unit="op",
    floor="primary-alone",
    build=_cases,
)
