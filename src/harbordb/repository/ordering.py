"""Orderings: what a repository's reads and pages sort by.

An ordering item is ``"name"`` (ascending), ``"-name"`` (descending), a
mapped attribute, or its ``.asc()`` / ``.desc()``. The primary key is always
appended as the tie-breaker, so every ordering is total. `Repository.list`
also takes any SQL expression; keyset pages need NOT NULL mapped columns of
a type a cursor can carry (`keyset_keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, UnaryExpression
from sqlalchemy.orm import ColumnProperty, Mapper, QueryableAttribute
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.sql.operators import desc_op
from sqlalchemy.sql.schema import Column

from harbordb.errors import ConfigurationError, InvalidInput
from harbordb.pagination import SortKey, check_sortable

Ordering = Sequence[str | ColumnElement[Any] | QueryableAttribute[Any]]
"""``"name"``, ``"-name"``, ``Model.name``, ``Model.name.desc()`` (any expression for `list`)."""


@dataclass(frozen=True)
class Sort:
    """One parsed ORDER BY item: a mapped-column key, or any expression (`list` only)."""

    key: SortKey | None
    expression: ColumnElement[Any]
    nullable: bool = False


def parse_ordering(mapper: Mapper[Any], ordering: Sequence[Any], owner: str) -> tuple[Sort, ...]:
    """`ordering` on `mapper`'s class, checked; errors start with `owner`."""
    if isinstance(ordering, str | bytes) or not isinstance(ordering, Sequence):
        raise InvalidInput(
            f'{owner}: order_by takes a sequence of items, such as ("-created_at",), '
            f"not {type(ordering).__name__}"
        )
    sorts = []
    for item in ordering:
        descending = False
        target = item
        if isinstance(item, str):
            descending = item.startswith("-")
            name = item[1:] if item[:1] in ("-", "+") else item
            if name[:1] in ("-", "+"):
                raise InvalidInput(f"{owner}: one sign at most in an order_by item, got {item!r}")
            if name not in mapper.column_attrs:
                raise ConfigurationError(
                    f"{owner}: {mapper.class_.__name__} has no column {name!r} to order by"
                )
            target = getattr(mapper.class_, name)
        elif isinstance(item, UnaryExpression) and item.modifier is not None:
            descending = item.modifier is desc_op
            target = item.element
        elif not isinstance(item, ColumnElement | QueryableAttribute):
            raise ConfigurationError(f"{owner}: cannot order by {item!r}")
        sorts.append(_sort_for(mapper, target, descending, item))
    return tuple(sorts)


def order_clauses(mapper: Mapper[Any], sorts: Sequence[Sort]) -> list[ColumnElement[Any]]:
    """ORDER BY clauses for `sorts`, then the primary-key columns not already in them.

    The primary key takes the direction of the last sort when it is a column.
    """
    clauses = [s.key.ordering if s.key is not None else s.expression for s in sorts]
    named = {s.key.name for s in sorts if s.key is not None}
    descending = bool(sorts) and sorts[-1].key is not None and sorts[-1].key.descending
    for key in primary_key_keys(mapper, descending):
        if key.name not in named:
            clauses.append(key.ordering)
    return clauses


def keyset_keys(mapper: Mapper[Any], sorts: Sequence[Sort]) -> list[SortKey]:
    """The keyset ordering: the sort keys, then the primary key (in the last key's direction).

    Refuses (`TypeError`) an expression, a nullable column, or a type no cursor
    can carry: a keyset page compares rows on these keys.
    """
    keys: list[SortKey] = []
    for sort in sorts:
        if sort.key is None:
            raise TypeError(
                "keyset pagination orders by mapped columns only, "
                f"not by the expression {sort.expression}"
            )
        if sort.nullable:
            raise TypeError(
                f"keyset pagination needs NOT NULL sort columns; "
                f"{mapper.class_.__name__}.{sort.key.name} is nullable"
            )
        check_sortable(sort.key)
        keys.append(sort.key)
    named = {k.name for k in keys}
    descending = bool(keys) and keys[-1].descending
    keys += [k for k in primary_key_keys(mapper, descending) if k.name not in named]
    return keys


def primary_key_keys(mapper: Mapper[Any], descending: bool) -> list[SortKey]:
    """A `SortKey` for each primary-key column, all in one direction."""
    keys = []
    for column in mapper.primary_key:
        prop = mapper.get_property_by_column(column)
        keys.append(SortKey(prop.key, getattr(mapper.class_, prop.key), column.type, descending))
    return keys


def _sort_for(mapper: Mapper[Any], target: Any, descending: bool, item: Any) -> Sort:
    expression = target.__clause_element__() if hasattr(target, "__clause_element__") else target
    column = expression if isinstance(expression, Column) or hasattr(expression, "table") else None
    prop = None
    if column is not None:
        try:
            prop = mapper.get_property_by_column(column)
        except UnmappedColumnError:  # another table's column: an expression here
            prop = None
    if isinstance(prop, ColumnProperty) and isinstance(prop.columns[0], Column):
        table_column = prop.columns[0]
        key = SortKey(prop.key, getattr(mapper.class_, prop.key), table_column.type, descending)
        return Sort(key, key.ordering, nullable=bool(table_column.nullable))
    if isinstance(item, str):  # pragma: no cover - strings always name a column property
        raise ConfigurationError(f"cannot order by {item!r}")
    return Sort(None, item if isinstance(item, ColumnElement) else expression)
