"""The per-level shape: one ``= ANY`` statement per relationship, for wide reads.

Nested aggregates build one array per parent on the server, and the client
decodes each; with thousands of parents two flat statements cost less
(benchmarks/README.md, W4). With ``per_level=True`` a projection reads its
root rows, then each relationship as one statement taking all the parents'
keys as a single array parameter (``child.fk = ANY($1)``, the same SQL for 5
parents and for 5,000), level by level, and builds the objects bottom-up.
Relationships must join on one column pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, Text, and_, any_, bindparam, cast, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import FromClause as Alias
from sqlalchemy.types import String

from harbordb.errors import ConfigurationError
from harbordb.projection import driver
from harbordb.projection.shape import Field, Kind
from harbordb.projection.sql import (
    Aliases,
    Build,
    _child_order,
    _converter,
    _on,
    _user_defined,
    columns,
)


@dataclass(frozen=True)
class Level:
    """One relationship field, read with its own statement."""

    index: int  # the field's position in the parent's row
    kind: Kind
    parent_key: int  # where the parent's row carries the key the children link to
    sql: str
    link: int  # where the child's row carries that key
    build: Build  # builds a child object (or converts a value) from its row
    children: tuple[Level, ...]


def plan(
    relations: list[tuple[int, Field]],
    parent: Alias,
    entries: list[Any],
    dialect: Dialect,
) -> tuple[Level, ...]:
    """The levels below a node whose row entries are `entries` on `parent`; appends
    to `entries` the keys the children link to."""
    levels = []
    for index, field in relations:
        prop = field.prop
        assert prop is not None
        pairs = prop.local_remote_pairs or () if prop.secondary is None else prop.synchronize_pairs
        if len(pairs) != 1:
            raise ConfigurationError(
                f"per_level reads follow relationships on one column pair; {prop} has {len(pairs)}"
            )
        local, remote = pairs[0]
        entries.append(_on(parent, local))
        levels.append(_level(index, field, len(entries) - 1, remote, dialect))
    return tuple(levels)


def _level(index: int, field: Field, parent_key: int, remote: Any, dialect: Dialect) -> Level:
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
    build: Build
    if field.kind == "values":
        assert field.value_key is not None
        value = getattr(aliased(prop.mapper.class_, child), field.value_key)
        convert = _converter(value.type, dialect)
        if _user_defined(value.type) or isinstance(value.type, String):
            value = cast(value, Text)
        entries: list[Any] = [value]

        def build_value(row: Any) -> Any:
            return row[0] if convert is None else convert(row[0])

        build = build_value

    else:
        assert field.child is not None
        relations: list[tuple[int, Field]] = []
        entries, build, joins = columns(
            field.child, child, aliases, dialect, nested=False, relations=relations
        )
        source = joins.apply(source)
        children = plan(relations, child, entries, dialect)
    entries.append(link)
    keys = bindparam("_keys", type_=ARRAY(link.type))
    statement = select(*entries).select_from(source).where(link == any_(keys))
    if field.kind != "one":
        statement = statement.order_by(*_child_order(field, prop, child))
    sql = str(statement.compile(dialect=dialect))
    return Level(index, field.kind, parent_key, sql, len(entries) - 1, build, children)


async def assemble(
    connection: driver.Held, rows: list[Any], levels: tuple[Level, ...], build: Build
) -> list[Any]:
    """The objects of `rows`, their relationship fields read level by level."""
    if not levels:
        return list(map(build, rows))
    found = []
    for level in levels:
        keys = list({row[level.parent_key] for row in rows} - {None})
        found.append((level, await _read(connection, level, keys) if keys else {}))
    objects = []
    for row in rows:
        values = list(row)
        for level, by_key in found:
            children = by_key.get(row[level.parent_key])
            if level.kind == "one":
                values[level.index] = children
            else:
                values[level.index] = () if children is None else tuple(children)
        objects.append(build(values))
    return objects


async def _read(connection: driver.Held, level: Level, keys: list[Any]) -> dict[Any, Any]:
    rows = await driver.fetch(connection, level.sql, [keys])
    objects = await assemble(connection, rows, level.children, level.build)
    by_key: dict[Any, Any] = {}
    if level.kind == "one":
        for row, built in zip(rows, objects, strict=True):
            by_key[row[level.link]] = built
        return by_key
    for row, built in zip(rows, objects, strict=True):
        by_key.setdefault(row[level.link], []).append(built)
    return by_key
