"""A whole load plan in one statement: collections nested as arrays of records.

Each statement costs two round trips with the prepared-statement caches off
(prepare, then bind and execute), so a `get` or a page that loads two
collections pays six where one statement pays two
(benchmarks/README.md, "ORM repository reads"). Where every collection of a
plan qualifies, the root statement carries each one as a correlated subquery,
``(SELECT array_agg(ROW(child columns..., its many-to-one columns..., its own
collections...) ORDER BY ...) FROM child ... WHERE child.fk = parent.pk)``,
the shape `harbordb.Projection` reads with, and `Hydrator` builds the ORM
objects from the records exactly as from flat rows (`harbordb.repository.direct`):
the same identity map, objects kept or overwritten the same way, collections
set as loaded on their owners unless already loaded (or ``populate_existing``).

The driver decodes each field of a record by the type the record carries, so
a column whose type changed under live connections reads as what it is now,
as at the top level. It cannot decode a user-defined type there: a native
enum travels as its text (which the Enum's result processor reads), and a
level with any column type not known to be built in (`direct._in_record`),
a collection reached through a many-to-one step, or any level that is not
direct, keeps the one-statement-per-level shape. Wide reads (`list`,
`get_many`) are not nested: they stay with one ``= ANY`` statement per level,
which decodes cheaper from about a hundred parents on (W4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Select, and_, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.orm.attributes import instance_dict, set_committed_value
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import Over, UnaryExpression
from sqlalchemy.sql.schema import Column

from harbordb.repository.direct import (
    Statement,
    _NotDirect,
    _Select,
    by_pk_parts,
    compiled_once,
    window_compiled,
    window_parts,
)
from harbordb.repository.objects import Entity, Hydrator
from harbordb.repository.plans import CollectionLoad, CompiledPlan


@dataclass(frozen=True, eq=False)
class Nest:
    """A collection read as an array of records at `position` of its owner's record."""

    relationship: RelationshipProperty[Any]
    position: int
    entity: Entity
    nests: tuple[Nest, ...]


def root_statement(
    plan: CompiledPlan, mapper: Mapper[Any], dialect: Dialect, text_times: bool
) -> Statement | None:
    """`get`'s whole plan as one statement, or None (then one per level)."""

    def build() -> Statement:
        if plan.joins is None or not plan.loads:
            raise _NotDirect
        built, entity, stmt = by_pk_parts(mapper, plan.joins, dialect, text_times)
        nests = _nests(built, plan.loads, mapper.local_table)
        stmt = stmt.add_columns(*(expression for expression, _ in nests))
        statement = built.compile(stmt, entity, -1)
        return replace(statement, nests=tuple(nest for _, nest in nests))

    return compiled_once(plan.direct, ("nested", id(dialect), text_times), build)


# Page queries with their plan nested, by dialect (None: read per level).
_WINDOWS: WeakKeyDictionary[Any, dict[tuple[int, bool], Statement | None]] = WeakKeyDictionary()


def window_statement(
    query: Select[Any], mapper: Mapper[Any], plan: CompiledPlan, dialect: Dialect, text_times: bool
) -> Statement | None:
    """A page query of `select_loaded` whose root level is direct, with its plan nested;
    None when a collection cannot be (then one statement per level)."""
    return compiled_once(
        _WINDOWS.setdefault(query, {}),
        (id(dialect), text_times),
        lambda: _window(query, mapper, plan, dialect, text_times),
    )


def _window(
    query: Select[Any], mapper: Mapper[Any], plan: CompiledPlan, dialect: Dialect, text_times: bool
) -> Statement:
    """The page query as a subquery, its rows' collections nested above it.

    Nested in the page query itself, the arrays would be built below its
    ``lead() OVER`` and copied through the window's row store: about 0.3 ms more
    server time on W2's page of 50 (EXPLAIN ANALYZE). Above it, they are built
    for the page's rows only, kept in the page's order by a ``row_number()``
    over the same ordering as ``lead()``."""
    if not plan.loads:
        raise _NotDirect
    built, entity, extras = window_parts(query, mapper, plan, dialect, text_times)
    lead = extras[-1] if extras else None
    if not isinstance(lead, Over) or lead.order_by is None:
        raise _NotDirect
    order = func.row_number().over(order_by=lead.order_by)
    inner = query.with_only_columns(
        *built.columns, *extras, order, maintain_column_froms=True
    ).subquery("harbordb_page")
    exported = list(inner.c)
    width = len(built.columns)
    nests = _nests(built, plan.loads, inner)
    columns = [*exported[:width], *(expression for expression, _ in nests)]
    stmt = select(*columns, *exported[width:-1]).select_from(inner).order_by(exported[-1])
    statement = window_compiled(built, entity, stmt, len(columns), dialect)
    return replace(statement, nests=tuple(nest for _, nest in nests))


def build(hydrator: Hydrator, statement: Statement, rows: Sequence[Any]) -> list[Any]:
    """The root objects of `rows`, with every nested collection, built in `hydrator`."""
    tree = _Tree(hydrator)
    return [tree.build(statement.entity, row, statement.nests) for row in rows]


class _Tree:
    """Builds one read's objects and sets their nested collections."""

    __slots__ = ("done", "hydrator", "setters")

    def __init__(self, hydrator: Hydrator) -> None:
        self.hydrator = hydrator
        # (owner, key) set by this read: needed only with ``populate_existing``; else a
        # collection set once is in its owner's ``__dict__`` and is not set again.
        self.done: set[tuple[int, str]] | None = set() if hydrator.overwrite else None
        self.setters: dict[Nest, Callable[[Any, list[Any]], None]] = {}

    def build(self, entity: Entity, row: Sequence[Any], nests: tuple[Nest, ...]) -> Any:
        hydrator = self.hydrator
        owner = entity.make(hydrator, row)
        for nest in nests:
            records = row[nest.position]
            if records is None:
                children = []
            elif nest.nests:
                children = [self.build(nest.entity, record, nest.nests) for record in records]
            else:
                make = nest.entity.make
                children = [make(hydrator, record) for record in records]
            if owner is None:
                continue
            key = nest.relationship.key
            if self.done is None:
                if key in instance_dict(owner):
                    continue
            else:
                mark = (id(owner), key)
                if mark in self.done:
                    continue
                self.done.add(mark)
            setter = self.setters.get(nest)
            if setter is None:
                setter = self.setters[nest] = self._setter(nest)
            setter(owner, children)
        return owner

    def _setter(self, nest: Nest) -> Callable[[Any, list[Any]], None]:
        found = self.hydrator.collection_setter(nest.relationship)
        if found is None:
            key = nest.relationship.key

            def found(owner: Any, children: list[Any]) -> None:
                set_committed_value(owner, key, children)

        return found


# -- compiling ------------------------------------------------------------------


def _nests(built: _Select, loads: Sequence[CollectionLoad], root: Any) -> list[tuple[Any, Nest]]:
    """The subqueries (and where their arrays will be) for `loads` of `built`'s root
    rows, read from `root` (the table, or the page's subquery)."""
    width = len(built.columns)
    found: list[tuple[Any, Nest]] = []
    for load in loads:
        found.append(_nest(load, root, width + len(found), built))
    return found


def _nest(load: CollectionLoad, parent: Any, position: int, above: _Select) -> tuple[Any, Nest]:
    """The correlated subquery reading `load`'s children of a `parent` row as an array."""
    if load.via:
        raise _NotDirect  # behind a many-to-one step: read per level
    relationship = load.relationship
    target = relationship.mapper
    child = target.local_table.alias()
    secondary = relationship.secondary
    if secondary is None:
        ((local, remote),) = relationship.local_remote_pairs or ()
        condition = _on(child, remote) == _on(parent, local)
        source: Any = child
    else:
        link = secondary.alias()
        ((local, remote),) = relationship.synchronize_pairs
        condition = _on(link, remote) == _on(parent, local)
        pairs = relationship.secondary_synchronize_pairs or ()
        source = child.join(link, and_(*(_on(link, s) == _on(child, c) for c, s in pairs)))
    built = _Select(above.dialect, source, nested=True, text_times=above.text_times)
    entity = built.entity(target, child, load.joins)
    nests = []
    for below in load.loads:
        expression, nest = _nest(below, child, len(built.columns), built)
        built.columns.append(expression)
        nests.append(nest)
    above.mappers.extend(built.mappers)
    order = [_ordering(item, child) for item in relationship.order_by or ()] or [
        _on(child, column) for column in target.primary_key
    ]
    aggregate = func.array_agg(aggregate_order_by(func.row(*built.columns), *order))
    subquery = select(aggregate).select_from(built.from_).where(condition).correlate(parent)
    return subquery.scalar_subquery(), Nest(relationship, position, entity, tuple(nests))


def _on(alias: Any, column: Any) -> Any:
    found = alias.corresponding_column(column)
    if found is None:
        raise _NotDirect
    return found


def _ordering(item: Any, child: Any) -> Any:
    """A relationship's ORDER BY item on the child's alias (a column, maybe descending)."""
    if isinstance(item, Column):
        return _on(child, item)
    if isinstance(item, UnaryExpression) and isinstance(item.element, Column):
        column = _on(child, item.element)
        if item.modifier is operators.desc_op:
            return column.desc()
        if item.modifier is operators.asc_op:
            return column.asc()
    raise _NotDirect
