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
from tests.library.repositories import LibraryWork

from harbordb import ConfigurationError, Database, InvalidInput, contains, count_queries

BIG = 2**63
LONE_SURROGATE = "ref-\ud800"

Call = Callable[[LibraryWork], Awaitable[Any]]

REPOSITORY_CASES: dict[str, tuple[Call, str]] = {
    "order_by a string": (lambda uow: uow.authors.list(order_by="email"), "sequence of items"),
    "order_by --id": (lambda uow: uow.authors.list(order_by=("--id",)), "one sign at most"),
    "order_by +-email": (lambda uow: uow.authors.list(order_by=("+-email",)), "one sign"),
    "page order_by string": (lambda uow: uow.authors.page(order_by="-id"), "sequence"),
    "list limit 2**63": (lambda uow: uow.authors.list(limit=BIG), "limit must be"),
    "offset page beyond BIGINT": (
        lambda uow: uow.authors.offset_page(page=BIG // 10, limit=50),
        "page must be",
    ),
    "search text with NUL": (
        lambda uow: uow.authors.list(uow.authors.matching("a\x00b")),
        "NUL",
    ),
    "search text with a lone surrogate": (
        lambda uow: uow.authors.list(contains(uow.authors.model.name, LONE_SURROGATE)),
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


def test_invalid_input_is_a_configuration_error_and_a_value_error() -> None:
    assert issubclass(InvalidInput, ConfigurationError)
    assert issubclass(InvalidInput, ValueError)
