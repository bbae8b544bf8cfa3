"""Keyset cursors and the keyset condition, without a database."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, Date, MetaData, Numeric, Table, Uuid
from sqlalchemy.dialects import postgresql
from tests.library.models import Author, Book, BookStatus

from harbordb.errors import InvalidCursor
from harbordb.pagination import (
    MAX_CURSOR_LENGTH,
    Page,
    SortKey,
    decode_cursor,
    encode_cursor,
    fingerprint,
    rows_after,
)


def key(attribute: Any, descending: bool = False) -> SortKey:
    column = attribute.property.columns[0]
    return SortKey(attribute.key, attribute, column.type, descending)


_extra = Table(
    "extra",
    MetaData(),
    Column("day", Date, nullable=False),
    Column("amount", Numeric(12, 2), nullable=False),
    Column("token", Uuid, nullable=False),
)

BOOK_KEYS = [key(Book.created_at, True), key(Book.status), key(Book.id, True)]
FP = fingerprint("books", BOOK_KEYS)


def valid_cursor() -> str:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    return encode_cursor(FP, [moment, BookStatus.PUBLISHED, 42])


def forged(fp: str, values: list[Any]) -> str:
    """A cursor with a correct checksum around arbitrary JSON values."""
    return encode_cursor(fp, values)


def test_cursor_round_trips_typed_values() -> None:
    values = decode_cursor(valid_cursor(), FP, BOOK_KEYS)
    assert values == [datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), BookStatus.PUBLISHED, 42]
    assert isinstance(values[1], BookStatus)


def test_cursor_round_trips_dates_decimals_and_uuids() -> None:
    keys = [SortKey(c.name, c, c.type) for c in _extra.columns]
    fp = fingerprint("extra", keys)
    token = uuid.uuid4()
    cursor = encode_cursor(fp, [date(2026, 2, 28), Decimal("12.50"), token])
    assert decode_cursor(cursor, fp, keys) == [date(2026, 2, 28), Decimal("12.50"), token]


def test_cursor_is_opaque_urlsafe_text() -> None:
    cursor = valid_cursor()
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cursor_from_another_ordering_is_refused() -> None:
    other = [key(Book.created_at), key(Book.status), key(Book.id)]  # same columns, ascending
    with pytest.raises(InvalidCursor, match="different ordering"):
        decode_cursor(valid_cursor(), fingerprint("books", other), other)


def test_fingerprint_depends_on_table_keys_and_directions() -> None:
    prints = {
        fingerprint("books", BOOK_KEYS),
        fingerprint("authors", BOOK_KEYS),
        fingerprint("books", BOOK_KEYS[:2]),
        fingerprint("books", [key(Book.created_at), *BOOK_KEYS[1:]]),
    }
    assert len(prints) == 4


@pytest.mark.parametrize(
    "values",
    [
        ["2026-01-02T03:04:05", "published", 1],  # naive datetime for a timestamptz column
        ["yesterday", "published", 1],
        [1700000000, "published", 1],
        ["2026-01-02T03:04:05+00:00", "refunded", 1],  # not a book_status label
        ["2026-01-02T03:04:05+00:00", "published", 2**63],  # beyond BIGINT
        ["2026-01-02T03:04:05+00:00", "published", True],  # a bool is not an id
        ["2026-01-02T03:04:05+00:00", "published", 1.5],
        ["2026-01-02T03:04:05+00:00", "published"],  # too few values
        ["2026-01-02T03:04:05+00:00", "published", 1, 2],  # too many
        ["2026-01-02T03:04:05+00:00", None, 1],
    ],
)
def test_values_that_do_not_fit_the_columns_are_refused(values: list[Any]) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(forged(FP, values), FP, BOOK_KEYS)


@pytest.mark.parametrize("text", ["nul\x00byte", "lone \ud800 surrogate"])
def test_strings_postgresql_cannot_take_are_refused(text: str) -> None:
    keys = [key(Book.isbn), key(Book.id)]
    fp = fingerprint("books", keys)
    with pytest.raises(InvalidCursor):
        decode_cursor(forged(fp, [text, 1]), fp, keys)


def test_integer_range_follows_the_column_type() -> None:
    keys = [key(Book.price_cents), key(Book.id)]  # INTEGER, BIGINT
    fp = fingerprint("books", keys)
    assert decode_cursor(forged(fp, [2**31 - 1, 2**63 - 1]), fp, keys) == [2**31 - 1, 2**63 - 1]
    with pytest.raises(InvalidCursor):
        decode_cursor(forged(fp, [2**31, 1]), fp, keys)


def test_flipping_any_byte_is_detected() -> None:
    raw = bytearray(base64.urlsafe_b64decode(valid_cursor() + "=="))
    for position in range(len(raw)):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        cursor = base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor, FP, BOOK_KEYS)


def test_a_hand_edited_payload_without_the_checksum_is_refused() -> None:
    payload = json.dumps([FP, ["2026-01-02T03:04:05+00:00", "published", 1]]).encode()
    cursor = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, FP, BOOK_KEYS)


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "a", "====", "é", "x" * (MAX_CURSOR_LENGTH + 1), 42, None, b"bytes"],
)
def test_garbage_is_refused(cursor: Any) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, FP, BOOK_KEYS)


@given(st.text(max_size=200))
def test_any_text_is_a_cursor_or_invalid(cursor: str) -> None:
    try:
        values = decode_cursor(cursor, FP, BOOK_KEYS)
    except InvalidCursor:
        return
    assert len(values) == len(BOOK_KEYS)  # pragma: no cover - needs a 64-bit checksum collision


@given(st.binary(max_size=200))
def test_any_bytes_encoded_are_a_cursor_or_invalid(raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, FP, BOOK_KEYS)


@given(
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(list(BookStatus)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_any_row_position_round_trips(moment: datetime, status: BookStatus, id: int) -> None:
    cursor = encode_cursor(FP, [moment, status, id])
    assert decode_cursor(cursor, FP, BOOK_KEYS) == [moment, status, id]


def test_non_utc_offsets_survive() -> None:
    moment = datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=-7, minutes=-30)))
    assert decode_cursor(encode_cursor(FP, [moment, "published", 1]), FP, BOOK_KEYS)[0] == moment


def compile_sql(expression: Any) -> str:
    return str(expression.compile(dialect=postgresql.dialect()))


def test_uniform_directions_use_one_row_comparison() -> None:
    keys = [key(Author.name), key(Author.id)]
    sql = compile_sql(rows_after(keys, ["Ada", 7]))
    assert sql.startswith("(authors.name, authors.id) > (")
    assert " OR " not in sql
    descending = [key(Author.name, True), key(Author.id, True)]
    assert compile_sql(rows_after(descending, ["Ada", 7])).startswith(
        "(authors.name, authors.id) < ("
    )


def test_mixed_directions_expand_to_or_branches() -> None:
    keys = [key(Book.price_cents, True), key(Book.isbn), key(Book.id)]
    sql = " ".join(compile_sql(rows_after(keys, [100, "A-1", 3])).split())
    assert sql.count(" OR ") == 2
    assert "books.price_cents < " in sql
    assert "books.price_cents = " in sql
    assert "books.isbn > " in sql


def test_keyset_condition_binds_values_never_inlines_them() -> None:
    sql = compile_sql(rows_after([key(Book.isbn), key(Book.id)], ["'; DROP TABLE x; --", 1]))
    assert "DROP" not in sql


def test_page_is_frozen() -> None:
    page: Page[int] = Page((1, 2), None, False)
    with pytest.raises(AttributeError):
        page.total = 3  # type: ignore[misc]
    assert page.total is None
