"""Harbor Commerce's inventory refuses arguments PostgreSQL could not take, before any SQL.

Ids beyond BIGINT and order refs with a NUL or a lone surrogate are an
`InvalidInput` (a ValueError) naming the argument, with 0 statements sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from harbor_commerce.inventory import Inventory
from harbordb import Database, InvalidInput, count_queries

BIG = 2**63
LONE_SURROGATE = "ref-\ud800"

INVENTORY_CASES: dict[str, tuple[Callable[[Inventory], Awaitable[Any]], str]] = {
    "variant id 2**63": (lambda inv: inv.reserve(BIG, 1, "ref"), "variant_id must be"),
    "customer id 2**63": (
        lambda inv: inv.reserve(1, 1, "ref", customer_id=BIG),
        "customer_id must be",
    ),
    "order ref with NUL": (lambda inv: inv.reserve(1, 1, "ref\x00"), "order_ref contains a NUL"),
    "order ref with a lone surrogate": (
        lambda inv: inv.checkout(LONE_SURROGATE, 1),
        "order_ref contains a lone surrogate",
    ),
    "release id 2**63": (lambda inv: inv.release(BIG), "reservation_id must be"),
    "checkout customer 2**63": (lambda inv: inv.checkout("ref", BIG), "customer_id must be"),
}


@pytest.mark.parametrize("case", list(INVENTORY_CASES))
async def test_inventory_arguments_are_checked_before_sql(db: Database, case: str) -> None:
    call, message = INVENTORY_CASES[case]
    with count_queries(db) as queries, pytest.raises(InvalidInput, match=message):
        await call(Inventory(db))
    assert queries.count == 0
