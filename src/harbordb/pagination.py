"""Keyset and offset pages, and the opaque cursors of keyset pagination.

A keyset page is the `limit` rows that follow the last row of the previous
page in a total order: the caller's sort keys, then the primary key as the
tie-breaker. The cursor carries that last row's key values.

Cursor format (opaque to callers, documented here for maintainers)::

    urlsafe-base64( checksum[8 bytes] || JSON [fingerprint, [value, ...]] )

- `fingerprint` names the ordering (table, keys, directions), so a cursor
  made under one ordering is refused under another.
- `checksum` (BLAKE2b) makes a flipped byte or a truncated cursor an
  `InvalidCursor` instead of a silent jump. It is not a signature: a client
  able to forge a cursor can only choose where its page starts, inside the
  rows its query's filters (and row-level security) already allow.
- Values are decoded by the sort column's SQL type and range-checked, so a
  cursor that decodes can always be bound: a bad cursor is never a database
  error.

The filters are not part of the fingerprint: a cursor reused with other
filters resumes at the same position within the rows those filters select.

Sort columns must be NOT NULL (`SQL NULL` has no place in a row comparison);
`Repository.page` refuses nullable ones.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import and_, literal, or_, tuple_
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Time,
    TypeEngine,
    Uuid,
)

from harbordb.errors import InvalidCursor

T = TypeVar("T")

Total = Literal["exact", "estimate"] | None
"""What `total` a page reports: none (the default), a COUNT, or the planner's estimate."""

MAX_CURSOR_LENGTH = 4096
_CHECKSUM_SIZE = 8


@dataclass(frozen=True)
class Page(Generic[T]):
    """One keyset page.

    `next_cursor` is None on the last page. `total` is None unless asked for:
    with ``total="exact"`` it is a COUNT of the rows matching the filters,
    with ``total="estimate"`` the planner's row estimate for the whole table.
    """

    items: tuple[T, ...]
    next_cursor: str | None
    has_more: bool
    total: int | None = None


@dataclass(frozen=True)
class OffsetPage(Generic[T]):
    """One numbered page (1-based) of `size` rows, for admin screens."""

    items: tuple[T, ...]
    page: int
    size: int
    has_more: bool
    total: int | None = None


@dataclass(frozen=True)
class SortKey:
    """One column of a keyset ordering.

    `name` is the mapped attribute, `column` the expression to order and
    compare on, `type` its SQL type (used to decode cursor values).
    """

    name: str
    column: ColumnElement[Any]
    type: TypeEngine[Any]
    descending: bool = False

    @property
    def ordering(self) -> ColumnElement[Any]:
        return self.column.desc() if self.descending else self.column.asc()


def fingerprint(table: str, keys: Sequence[SortKey]) -> str:
    """A short digest naming the ordering a cursor belongs to."""
    spec = table + ":" + ",".join(("-" if k.descending else "+") + k.name for k in keys)
    return hashlib.blake2b(spec.encode(), digest_size=6).hexdigest()


def rows_after(keys: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """The rows strictly after `values` in the ordering `keys`.

    Each value is bound as a parameter of its key's type; a `bindparam` stands
    for a value given when the statement runs (a statement built once).

    One row-value comparison when all directions agree (it can use a
    composite index); otherwise the expanded form
    ``a > x OR (a = x AND b < y) OR ...``.
    """
    if len(keys) != len(values) or not keys:
        raise InvalidCursor("cursor does not fit this ordering")
    if all(k.descending == keys[0].descending for k in keys):
        left = tuple_(*(k.column for k in keys))
        right = tuple_(*(_bound(k, v) for k, v in zip(keys, values, strict=True)))
        return left < right if keys[0].descending else left > right
    branches = []
    for i, key in enumerate(keys):
        equal = [k.column == _bound(k, v) for k, v in zip(keys[:i], values[:i], strict=True)]
        bound = _bound(key, values[i])
        beyond = key.column < bound if key.descending else key.column > bound
        branches.append(and_(*equal, beyond))
    return or_(*branches)


def _bound(key: SortKey, value: Any) -> ColumnElement[Any]:
    if isinstance(value, BindParameter):  # a value given when the statement runs
        return value
    return literal(value, type_=key.type)


def encode_cursor(fp: str, values: Iterable[Any]) -> str:
    """The opaque cursor for the row whose sort-key values are `values`."""
    payload = json.dumps([fp, [_to_json(v) for v in values]], separators=(",", ":")).encode()
    raw = _checksum(payload) + payload
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: object, fp: str, keys: Sequence[SortKey]) -> list[Any]:
    """The sort-key values in `cursor`, typed for `keys`; `InvalidCursor` if it is unusable."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor is malformed")
    try:
        padded = cursor.encode("ascii") + b"=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise InvalidCursor("cursor is malformed") from None
    checksum, payload = raw[:_CHECKSUM_SIZE], raw[_CHECKSUM_SIZE:]
    if len(checksum) != _CHECKSUM_SIZE or checksum != _checksum(payload):
        raise InvalidCursor("cursor is malformed")
    try:
        decoded = json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidCursor("cursor is malformed") from None
    if not (isinstance(decoded, list) and len(decoded) == 2 and isinstance(decoded[1], list)):
        raise InvalidCursor("cursor is malformed")
    cursor_fp, raw_values = decoded
    if cursor_fp != fp:
        raise InvalidCursor("cursor belongs to a different ordering")
    if len(raw_values) != len(keys):
        raise InvalidCursor("cursor does not fit this ordering")
    return [_from_json(raw_value, key) for raw_value, key in zip(raw_values, keys, strict=True)]


def _checksum(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECKSUM_SIZE, person=b"harbordb-cursor").digest()


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _to_json(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("keyset pagination cannot resume after a non-finite float")
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"keyset pagination cannot carry values of type {type(value).__name__}")


_INT_BITS: tuple[tuple[type[Integer], int], ...] = (
    (BigInteger, 64),
    (SmallInteger, 16),
    (Integer, 32),
)


def _from_json(raw: Any, key: SortKey) -> Any:
    """`raw` as a value of `key.type`, or `InvalidCursor`."""
    sql_type = key.type
    try:
        value = _coerce(raw, sql_type)
    except (TypeError, ValueError, InvalidOperation, OverflowError):
        value = None
    if value is None:
        raise InvalidCursor("cursor does not fit this ordering")
    return value


def _coerce(raw: Any, sql_type: TypeEngine[Any]) -> Any:
    if isinstance(sql_type, Boolean):
        return raw if isinstance(raw, bool) else None
    if isinstance(sql_type, Integer):
        if type(raw) is not int:
            return None
        bits = next(b for cls, b in _INT_BITS if isinstance(sql_type, cls))
        return raw if -(2 ** (bits - 1)) <= raw < 2 ** (bits - 1) else None
    if isinstance(sql_type, Float) or (isinstance(sql_type, Numeric) and not sql_type.asdecimal):
        return float(raw) if type(raw) in (int, float) else None
    if isinstance(sql_type, Numeric):
        number = Decimal(raw) if isinstance(raw, str) else None
        if number is None or not number.is_finite():
            return None
        # Far beyond any column's precision, PostgreSQL would refuse the bound value.
        exponent = number.as_tuple().exponent
        return number if isinstance(exponent, int) and abs(exponent) <= 1000 else None
    if isinstance(sql_type, Enum):
        if not isinstance(raw, str):
            return None
        enum_class = sql_type.enum_class
        if enum_class is not None:
            return enum_class(raw)
        return raw if raw in sql_type.enums else None
    if isinstance(sql_type, String):
        return raw if isinstance(raw, str) and _valid_text(raw) else None
    if not isinstance(raw, str):
        return None
    if isinstance(sql_type, DateTime):
        moment = datetime.fromisoformat(raw)
        aware = moment.tzinfo is not None
        return moment if aware == bool(sql_type.timezone) else None
    if isinstance(sql_type, Date):
        return date.fromisoformat(raw)
    if isinstance(sql_type, Time):
        return time.fromisoformat(raw)
    if isinstance(sql_type, Uuid):
        return uuid.UUID(raw)
    return None


def _valid_text(text: str) -> bool:
    """PostgreSQL text holds no NUL, and the driver encodes UTF-8 (no lone surrogates)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_sortable(key: SortKey) -> None:
    """Refuse a sort key whose values a cursor could not carry back."""
    if not isinstance(
        key.type,
        Boolean | Integer | Float | Numeric | Enum | String | DateTime | Date | Time | Uuid,
    ):
        raise TypeError(
            f"keyset pagination cannot sort on {key.name!r}: "
            f"type {type(key.type).__name__} has no cursor encoding"
        )
