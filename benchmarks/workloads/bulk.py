"""W5: bulk insert of 10,000 and 100,000 stock reservations, committed.

Reservations are the bulk table of Harbor Commerce, and the seed leaves the
table empty: after each operation, untimed, the rows are counted (exactly the
expected number must have arrived) and the table truncated, so every operation
starts from an empty table without dead rows. Each row has two foreign keys
(variant, customer), a unique key and a CHECK, which PostgreSQL checks for
every variant alike; id, status and timestamps come from server defaults.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert

from benchmarks import seed
from benchmarks.core import Case, Lab, Op, Variant, Workload
from harbor_commerce.models import StockReservation

COLUMNS = ("variant_id", "customer_id", "order_ref", "qty", "expires_at")
Row = tuple[int, int, str, int, datetime]
_EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def _rows(lab: Lab, count: int) -> list[Row]:
    variants = lab.dataset.counts["variants"]
    customers = lab.dataset.counts["customers"]
    return [
        (1 + i % variants, 1 + i % customers, f"bulk-{i:07d}", 1 + i % seed.VARIANTS_PER_PRODUCT,
         _EXPIRES)
        for i in range(count)
    ]  # fmt: skip


def orm_add_all(lab: Lab, rows: list[Row]) -> Op:
    async def op() -> int:
        async with lab.db.session() as session:
            session.add_all(
                [StockReservation(**dict(zip(COLUMNS, row, strict=True))) for row in rows]
            )
            await session.commit()
        return len(rows)

    return op


def core_insert(lab: Lab, rows: list[Row]) -> Op:
    values = [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    async def op() -> int:
        async with lab.db.engine.begin() as connection:
            await connection.execute(insert(StockReservation), values)
        return len(values)

    return op


def repository_copy(lab: Lab, rows: list[Row]) -> Op:
    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            copied = await uow.reservations.copy(rows, columns=COLUMNS)
            await uow.commit()
        return copied

    return op


def asyncpg_copy(lab: Lab, rows: list[Row]) -> Op:
    async def op() -> int:
        status = await lab.raw.copy_records_to_table(
            "stock_reservations", records=rows, columns=COLUMNS
        )
        return int(status.split()[-1])

    return op


def empty_table(lab: Lab, expected: int) -> Op:
    async def op() -> int:
        arrived = await lab.raw.fetchval("SELECT count(*) FROM stock_reservations")
        if arrived != expected:
            raise AssertionError(f"W5 expected {expected} new reservations, found {arrived}")
        await lab.raw.execute("TRUNCATE stock_reservations")
        return int(arrived)

    return op


async def _cases(lab: Lab) -> list[Case]:
    cases = []
    for count in lab.sizes.bulk_rows:
        rows = _rows(lab, count)
        reset = empty_table(lab, count)
        variants = [
            Variant("orm-add_all", orm_add_all(lab, rows), reset=reset),
            Variant("core-insert", core_insert(lab, rows), reset=reset),
            Variant(
                "repository-copy", repository_copy(lab, rows), reset=reset, hidden_statements=1
            ),
            Variant("asyncpg-copy", asyncpg_copy(lab, rows), reset=reset, hidden_statements=1),
        ]
        cases.append(Case(f"{count:,} rows", {"rows": count}, variants))
    return cases


W5 = Workload(
    key="W5",
    title="bulk insert of stock reservations",
    description=(
        "Insert and commit 10,000 and 100,000 stock reservations (two foreign keys, a "
        "unique key, server-side id, status and timestamps)."
    ),
    unit="row",
    floor="asyncpg-copy",
    build=_cases,
)
