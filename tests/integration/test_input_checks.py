"""Arguments PostgreSQL would refuse are refused before any SQL, as `InvalidInput`.

Each case would otherwise cost a round trip and come back as a generic
`DatabaseError` (or be misread: ``order_by="email"`` letter by letter). Here
each is an `InvalidInput` (a `ConfigurationError`, also a ValueError) naming
the argument, with 0 statements sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from harbor_commerce.inventory import Inventory
from harbor_commerce.uow import CommerceWork
from harbordb import ConfigurationError, Database, InvalidInput, contains, count_queries

BIG = 2**63
LONE_SURROGATE = "ref-\ud800"

Call = Callable[[CommerceWork], Awaitable[Any]]

REPOSITORY_CASES: dict[str, tuple[Call, str]] = {
    "order_by a string": (lambda uow: uow.customers.list(order_by="email"), "sequence of items"),
    "order_by --id": (lambda uow: uow.customers.list(order_by=("--id",)), "one sign at most"),
    "order_by +-email": (lambda uow: uow.customers.list(order_by=("+-email",)), "one sign"),
    "page order_by string": (lambda uow: uow.customers.page(order_by="-id"), "sequence"),
    "list limit 2**63": (lambda uow: uow.customers.list(limit=BIG), "limit must be"),
    "offset page beyond BIGINT": (
        lambda uow: uow.customers.offset_page(page=BIG // 10, limit=50),
        "page must be",
    ),
    "search text with NUL": (
        lambda uow: uow.customers.list(uow.customers.matching("a\x00b")),
        "NUL",
    ),
    "search text with a lone surrogate": (
        lambda uow: uow.customers.list(contains(uow.customers.model.name, LONE_SURROGATE)),
        "lone surrogate",
    ),
}


@pytest.mark.parametrize("case", list(REPOSITORY_CASES))
async def test_repository_arguments_are_checked_before_sql(db: Database, case: str) -> None:
    call, message = REPOSITORY_CASES[case]
    async with db.unit_of_work() as uow:
        with count_queries(db) as queries, pytest.raises(InvalidInput, match=message):
            await call(uow)
    assert queries.count == 0


CLAIMS_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "NaN": ({"sub": "u", "score": float("nan")}, "non-finite"),
    "infinity": ({"sub": "u", "limits": [1.0, float("inf")]}, "non-finite"),
    "NUL in a value": ({"sub": "u\x00"}, "NUL"),
    "NUL in a key": ({"s\x00ub": "u"}, "NUL"),
    "lone surrogate": ({"sub": {"nested": LONE_SURROGATE}}, "lone surrogate"),
}


@pytest.mark.parametrize("case", list(CLAIMS_CASES))
async def test_claims_are_checked_before_sql(db: Database, case: str) -> None:
    claims, message = CLAIMS_CASES[case]
    with count_queries(db) as queries, pytest.raises(ConfigurationError, match=message):
        async with db.unit_of_work(claims=claims):
            pass
    assert queries.count == 0


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


def test_invalid_input_is_a_configuration_error_and_a_value_error() -> None:
    assert issubclass(InvalidInput, ConfigurationError)
    assert issubclass(InvalidInput, ValueError)
