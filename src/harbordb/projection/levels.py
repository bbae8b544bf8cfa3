"""The per-level shape: one ``= ANY`` statement per relationship, for wide reads.

Nested aggregates build one array per parent on the server, and the client
decodes each record of them apart; from about a hundred parents flat rows
cost less to decode (benchmarks/README.md, W4). Per level, a projection reads
its root rows, then each relationship as one statement taking all the
parents' keys as a single array parameter (``child.fk = ANY($1)``, the same
SQL for 5 parents and for 5,000), level by level, and builds the objects
bottom-up. Relationships must join on one column pair (others always nest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, Text, and_, any_, bindparam, cast, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import Cast, UnaryExpression
from sqlalchemy.sql.selectable import FromClause as Alias

from harbordb import driver, timestamps
from harbordb.errors import ConfigurationError
from harbordb.projection.build import Builder, Part, PartKind, value_collector
from harbordb.projection.shape import Field, Kind, Node
from harbordb.projection.sql import (
    Aliases,
    _child_order,
    _on,
    build_of,
    carried,
    columns,
    values_of,
)


@dataclass(frozen=True)
class Level:
    """One relationship field, read with its own statement."""

    index: int  # the field's position among the parent's fields
    kind: Kind
    parent_key: int  # where the parent's row carries the key the children link to
    sql: str
    link: int  # where the child's row carries that key
    collect: Callable[..., dict[Any, Any]]  # (rows, found) -> child objects (values) by key
    children: tuple[Level, ...]


def plan(
    node: Node,
    relations: list[tuple[int, Field]],
    parent: Alias,
    entries: list[Any],
    parts: list[Part],
    dialect: Dialect,
    text_times: bool,
) -> tuple[Level, ...]:
    """The levels below `node`, whose row entries are `entries` on `parent`; appends
    to `entries` the keys the children link to (unless a field carries them already),
    and points the relationship fields' `parts` at them (level i's objects are
    ``found[i]``)."""
    levels: list[Level] = []
    for index, field in relations:
        prop = field.prop
        assert prop is not None
        pairs = prop.local_remote_pairs or () if prop.secondary is None else prop.synchronize_pairs
        if len(pairs) != 1:
            raise ConfigurationError(
                f"per_level reads follow relationships on one column pair; {prop} has {len(pairs)}"
            )
        local, remote = pairs[0]
        parent_key = carried(node, parts, local)
        if parent_key is None:
            entries.append(_on(parent, local))
            parent_key = len(entries) - 1
        kind: PartKind = "found-one" if field.kind == "one" else "found-many"
        parts[index] = Part(kind, parent_key, slot=len(levels))
        levels.append(_level(index, field, parent_key, remote, dialect, text_times))
    return tuple(levels)


def _level(
    index: int, field: Field, parent_key: int, remote: Any, dialect: Dialect, text_times: bool
) -> Level:
    prop = field.prop
    assert prop is not None
    table = prop.mapper.local_table
    assert isinstance(table, Table)
    aliases = Aliases()
    child = aliases(table)
    source: Any = child
    if prop.secondary is None:
        link = _on(child, remote)
    else:
        secondary = prop.secondary.alias()
        link = _on(secondary, remote)
        on = [_on(secondary, s) == _on(child, c) for c, s in prop.secondary_synchronize_pairs or ()]
        source = child.join(secondary, and_(*on))
    children: tuple[Level, ...] = ()
    convert = None
    at: int | None = None  # where the child's row carries the parent's key
    if field.kind == "values":
        value, convert = values_of(field, prop, child, dialect, text_times)
        entries: list[Any] = [value]
    else:
        assert field.child is not None
        relations: list[tuple[int, Field]] = []
        entries, parts, joins = columns(
            field.child, child, aliases, dialect,
            nested=False, text_times=text_times, relations=relations,
        )  # fmt: skip
        source = joins.apply(source)
        children = plan(field.child, relations, child, entries, parts, dialect, text_times)
        if prop.secondary is None:
            at = carried(field.child, parts, remote)
    if at is None:
        entries.append(link)
        at = len(entries) - 1
    single = field.kind == "one"
    if field.child is None:
        collect = value_collector(convert, at, single)
    else:
        collect = build_of(field.child, parts, len(entries)).collect(at, single)
    keys = bindparam("_keys", type_=ARRAY(link.type))
    condition = link == any_(keys)
    if field.kind == "one":
        statement = select(*entries).select_from(source).where(condition)
    else:
        # By parent first: each parent's children stay in their order, and the server
        # can take the rows in the link's index order and sort within each parent (an
        # incremental sort) instead of sorting them all (W4's 50,000 orders: 11.7 ms
        # against 23.3 ms, which spilled to disk).
        order = [link, *_child_order(field, prop, child)]
        statement = sorted_then_cast(entries, source, condition, order)
    sql = str(statement.compile(dialect=dialect))
    return Level(index, field.kind, parent_key, sql, at, collect, children)


def sorted_then_cast(entries: list[Any], source: Any, condition: Any, order: list[Any]) -> Any:
    """``SELECT entries FROM source WHERE condition ORDER BY order``, with timestamps
    read as text (`harbordb.timestamps`) cast only after the sort.

    PostgreSQL computes a select list below the sort that orders it: every cast
    before the first row goes out, and each sorted row wider. Cast above an
    ordered subquery, they are computed as the rows stream out, while the client
    decodes the ones before (5,000 orders by ``= ANY``: 6.68 -> 6.12 ms of wall time). The outer
    ``ORDER BY`` repeats the subquery's, which the planner sees is already met
    (no second sort); it keeps the order a guarantee.
    """
    under = [_text_time(entry) for entry in entries]
    if all(column is None for column in under):
        return select(*entries).select_from(source).where(condition).order_by(*order)
    inner = [entry if col is None else col for entry, col in zip(entries, under, strict=True)]
    keys = [item.element if isinstance(item, UnaryExpression) else item for item in order]
    sorted_rows = (
        select(
            *(column.label(f"_v{i}") for i, column in enumerate(inner)),
            *(key.label(f"_o{i}") for i, key in enumerate(keys)),
        )
        .select_from(source)
        .where(condition)
        .order_by(*order)
        .subquery("_sorted")
    )
    outer = [
        sorted_rows.c[f"_v{i}"] if column is None else cast(sorted_rows.c[f"_v{i}"], Text)
        for i, column in enumerate(under)
    ]
    reorder = [
        sorted_rows.c[f"_o{i}"].desc()
        if isinstance(item, UnaryExpression) and item.modifier is operators.desc_op
        else sorted_rows.c[f"_o{i}"]
        for i, item in enumerate(order)
    ]
    return select(*outer).order_by(*reorder)


def _text_time(entry: Any) -> Any:
    """The timestamp under `entry` when `entry` is its cast to text for reading, else None."""
    if isinstance(entry, Cast) and isinstance(entry.type, Text):
        inner = entry.clause
        if timestamps.readable_as_text(inner.type):
            return inner
    return None


async def assemble(
    connection: driver.Held, rows: list[Any], levels: tuple[Level, ...], builder: Builder
) -> list[Any]:
    """The objects of `rows` (in place of the rows), their relationship fields read
    level by level."""
    if not levels:
        return builder.fill(rows)
    return builder.fill(rows, await _found(connection, rows, levels))


async def _found(
    connection: driver.Held, rows: list[Any], levels: tuple[Level, ...]
) -> tuple[dict[Any, Any], ...]:
    """For each level, its objects by the parent key they belong to."""
    found = []
    for level in levels:
        keys = list({row[level.parent_key] for row in rows} - {None})
        found.append(await _read(connection, level, keys) if keys else {})
    return tuple(found)


async def _read(connection: driver.Held, level: Level, keys: list[Any]) -> dict[Any, Any]:
    rows = await driver.fetch(connection, level.sql, [keys])
    if not level.children:
        return level.collect(rows)
    return level.collect(rows, await _found(connection, rows, level.children))
