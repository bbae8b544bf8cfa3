"""`Projection`: a declared read, compiled once per shape, run on the driver."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from harbordb import driver, timestamps
from harbordb.errors import ConfigurationError
from harbordb.pagination import (
    Page,
    SortKey,
    check_sortable,
    decode_cursor,
    encode_cursor,
    fingerprint,
    rows_after,
)
from harbordb.projection.build import Builder
from harbordb.projection.levels import Level, assemble, plan
from harbordb.projection.shape import Node, resolve
from harbordb.projection.sql import Aliases, build_of, columns

T = TypeVar("T")

WIDE = 100
"""Root rows from which an `all` of automatic shape goes per level (benchmarks/README.md, W4)."""

Filter = Callable[[Any], ColumnElement[bool]]
"""A condition on the projection's root model: called with its aliased entity."""


@dataclass(frozen=True)
class Compiled:
    """One read, ready to run: its SQL, how to bind it, how to build its objects."""

    sql: str
    names: tuple[str, ...]  # bind parameter names, in positional order
    defaults: dict[str, Any]  # values bound in the statement itself (literals)
    processors: dict[str, Callable[[Any], Any]]  # bind processors where the type has one
    build: Builder
    keys: tuple[SortKey, ...] = ()  # page reads: the ordering
    key_columns: tuple[int, ...] = ()  # page reads: where each key's value is in the row
    key_converters: tuple[Callable[[Any], Any] | None, ...] = ()  # ... and what reads it
    levels: tuple[Level, ...] = ()  # per-level reads: one statement per relationship
    fingerprint: str = ""  # page reads: the ordering's cursor fingerprint

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        values = []
        for name in self.names:
            if name in params:
                value = params[name]
            elif name in self.defaults:
                value = self.defaults[name]
            else:
                raise TypeError(f"this read needs a value for parameter {name!r}")
            processor = self.processors.get(name)
            values.append(value if processor is None else processor(value))
        return values


class Projection(Generic[T]):
    """A frozen typed read of `model`: objects of dataclass `cls`, built from the driver's rows.

    Each field of `cls` names a column of `model` (by default, the column of
    the same name), or is given as a keyword: a column attribute, a callable
    building an expression from the model's aliased entity, a `Projection`
    of the relationship of that name, or `related(...)`.

    Two shapes, the same objects: one statement however deep the tree, each
    relationship a nested aggregate (cheapest for a page or one graph), or one
    ``= ANY`` statement per relationship (cheaper to decode for wide reads:
    `harbordb.projection.levels`). `get` and `page` nest; `all` nests unless
    it is expected to return `WIDE` root rows or more, from its limit and from
    what the same read returned last time (so without a limit it nests the
    first time). ``per_level=True`` or ``False`` forces a shape on any read;
    projections without relationships are one statement either way.

    Declare projections once, at import; their SQL is compiled on first use
    per read shape and reused (statements and bind parameters, nothing
    interpolated). Reads run in the caller's unit of work (or `AsyncSession`),
    on its connection and in its transaction.
    """

    def __init__(self, cls: type[T], model: type[Any], /, **fields: Any) -> None:
        self.node: Node = resolve(cls, model, fields)
        self._filters: tuple[Filter, ...] = ()
        self._reset()

    def _reset(self) -> None:
        self._compiled: dict[tuple[Any, ...], Compiled] = {}
        self._widths: dict[tuple[Any, ...], int] = {}  # root rows of the last read, per shape
        self._nests = any(field.kind != "column" for field in self.node.fields)
        self._levels_refused = False  # a relationship the per-level shape cannot follow

    @property
    def cls(self) -> type[T]:
        cls: type[T] = self.node.cls
        return cls

    def where(self, *conditions: Filter) -> Projection[T]:
        """This projection restricted to rows matching every condition (and this one's).

        A condition is a callable taking the model's aliased entity, e.g.
        ``lambda p: p.archived_at.is_(None)``; values given at read time are
        ``bindparam("name")``s, passed to `get`/`page`/`all` as ``params``.
        Build restricted projections once, like projections.
        """
        restricted: Projection[T] = object.__new__(Projection)
        restricted.node = self.node
        restricted._filters = (*self._filters, *conditions)
        restricted._reset()
        return restricted

    # -- reads -------------------------------------------------------------

    async def get(
        self,
        source: Any,
        *key: Any,
        params: dict[str, Any] | None = None,
        per_level: bool | None = None,
    ) -> T | None:
        """The object whose primary key is `key`, or None. One statement (with
        ``per_level=True``, one per relationship more: see `harbordb.projection.levels`)."""
        connection = await driver.held(source)
        compiled = self._compile(("get", bool(per_level)), connection)
        pk = self.node.mapper.primary_key
        if len(key) != len(pk):
            raise TypeError(f"{self.node.model.__name__} has a {len(pk)}-column primary key")
        values = {f"_key_{i}": value for i, value in enumerate(key)}
        arguments = compiled.arguments({**(params or {}), **values})
        rows = await driver.fetch(connection, compiled.sql, arguments)
        if not rows:
            return None
        (found,) = await assemble(connection, rows[:1], compiled.levels, compiled.build)
        return found  # type: ignore[no-any-return]

    async def all(
        self,
        source: Any,
        *,
        order_by: Sequence[str] = (),
        limit: int | None = None,
        params: dict[str, Any] | None = None,
        per_level: bool | None = None,
    ) -> list[T]:
        """Every matching object in `order_by` order (then by primary key). One statement,
        or one per relationship more for a wide read (`per_level`: see the class)."""
        connection = await driver.held(source)
        read = ("all", tuple(order_by), limit is not None)
        compiled = self._choose(read, per_level, limit, connection)
        values = dict(params or {})
        if limit is not None:
            values["_limit"] = _positive(limit)
        rows = await driver.fetch(connection, compiled.sql, compiled.arguments(values))
        self._widths[read] = len(rows)
        return await assemble(connection, rows, compiled.levels, compiled.build)

    async def page(
        self,
        source: Any,
        *,
        after: str | None = None,
        limit: int = 50,
        order_by: Sequence[str] = (),
        params: dict[str, Any] | None = None,
        per_level: bool | None = None,
    ) -> Page[T]:
        """A keyset page of `limit` objects after cursor `after`. One statement (with
        ``per_level=True``, one per relationship more).

        Ordered by `order_by` (attribute names, "-name" descending; NOT NULL
        columns), then the primary key. Cursors are those of `Repository.page`
        for the same model and ordering: one made by either works in the other.
        """
        shape = ("page", tuple(order_by), after is not None, bool(per_level))
        connection = await driver.held(source)
        compiled = self._compile(shape, connection)
        keys, fp = compiled.keys, compiled.fingerprint
        values = dict(params or {})
        values["_limit"] = _positive(limit) + 1  # one more row tells whether a next page exists
        if after is not None:
            for i, value in enumerate(decode_cursor(after, fp, keys)):
                values[f"_after_{i}"] = value
        rows = await driver.fetch(connection, compiled.sql, compiled.arguments(values))
        has_more = len(rows) > limit
        if has_more:
            del rows[limit:]
        cursor = None
        if has_more:
            last = rows[-1]
            read = zip(compiled.key_columns, compiled.key_converters, strict=True)
            cursor = encode_cursor(fp, [last[i] if c is None else c(last[i]) for i, c in read])
        items = await assemble(connection, rows, compiled.levels, compiled.build)
        return Page(tuple(items), cursor, has_more)

    def _per_level(self, read: tuple[Any, ...], limit: int | None) -> bool:
        """Whether an `all` of automatic shape goes per level: when it is expected to
        return `WIDE` root rows or more, expected from its limit and from the number
        the same read returned last time (without a limit, only that, so its first
        read nests). Projections without relationships, or with one the per-level
        shape cannot follow, always nest."""
        if not self._nests or self._levels_refused:
            return False
        expected = self._widths.get(read)
        if limit is not None:
            expected = limit if expected is None else min(expected, limit)
        return expected is not None and expected >= WIDE

    def _choose(
        self,
        read: tuple[Any, ...],
        per_level: bool | None,
        limit: int | None,
        connection: driver.Held,
    ) -> Compiled:
        """The compiled read, of the shape asked for, or chosen (`_per_level`)."""
        if per_level is None and self._per_level(read, limit):
            try:
                return self._compile((*read, True), connection)
            except ConfigurationError:  # e.g. a relationship on two column pairs
                self._levels_refused = True
        return self._compile((*read, bool(per_level)), connection)

    # -- compiling ---------------------------------------------------------

    def _compile(self, shape: tuple[Any, ...], connection: driver.Held) -> Compiled:
        """The read of `shape` for `connection`: its dialect, and whether it reads
        timestamps as text (`harbordb.timestamps`)."""
        dialect = connection.dialect
        text_times = timestamps.text_times(connection.driver)
        cache_key = (*shape, type(dialect), text_times)
        compiled = self._compiled.get(cache_key)
        if compiled is None:
            compiled = self._compiled[cache_key] = self._build(shape, dialect, text_times)
        return compiled

    def _build(self, shape: tuple[Any, ...], dialect: Dialect, text_times: bool) -> Compiled:
        node = self.node
        aliases = Aliases()
        root = aliases(node.table)
        entity = aliased(node.model, root)
        per_level = bool(shape[-1])
        relations: list[Any] | None = [] if per_level else None
        entries, parts, joins = columns(
            node, root, aliases, dialect, nested=False, text_times=text_times, relations=relations
        )
        levels: tuple[Level, ...] = ()
        if relations:
            levels = plan(node, relations, root, entries, parts, dialect, text_times)
        conditions = [condition(entity) for condition in self._filters]
        keys: list[SortKey] = []
        key_columns: list[int] = []
        key_converters: list[Callable[[Any], Any] | None] = []  # for timestamps read as text
        kind = shape[0]
        if kind == "get":
            for i, column in enumerate(node.mapper.primary_key):
                name = node.mapper.get_property_by_column(column).key
                key_param = bindparam(f"_key_{i}", type_=column.type)
                conditions.append(getattr(entity, name) == key_param)
        else:
            keys = self._sort_keys(entity, shape[1])
            fields = {  # where the row carries each column field
                field.key: part
                for field, part in zip(node.fields, parts, strict=True)
                if field.key and part.kind == "value"
            }
            for key in keys:
                part = fields.get(key.name)
                if part is not None:
                    key_columns.append(part.index)
                    key_converters.append(part.call if part.call is timestamps.timestamp else None)
                else:  # carried after the fields, for the cursor
                    key_columns.append(len(entries))
                    key_converters.append(None)
                    entries.append(key.column)
        build = build_of(node, parts, len(entries))  # the row: entries, keys included
        statement = select(*entries).select_from(joins.apply(root))
        if kind == "page" and shape[2]:
            after = [bindparam(f"_after_{i}", type_=k.type) for i, k in enumerate(keys)]
            conditions.append(rows_after(keys, after))
        if conditions:
            statement = statement.where(*conditions)
        if keys:
            statement = statement.order_by(*(key.ordering for key in keys))
        if kind == "page" or (kind == "all" and shape[2]):
            statement = statement.limit(bindparam("_limit"))
        compiled = statement.compile(dialect=dialect)
        sql, names, binds = str(compiled), tuple(compiled.positiontup or ()), compiled.binds
        defaults = {name: binds[name].value for name in names if not binds[name].required}
        processors: dict[str, Callable[[Any], Any]] = {}
        for name in names:
            processor = binds[name].type.bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        return Compiled(
            sql,
            names,
            defaults,
            processors,
            build,
            tuple(keys),
            tuple(key_columns),
            tuple(key_converters),
            levels,
            fingerprint(node.table.name, keys) if keys else "",
        )

    def _sort_keys(self, entity: Any, order_by: Sequence[str]) -> list[SortKey]:
        """The caller's keys, then the primary key in the last key's direction."""
        mapper = self.node.mapper
        keys: list[SortKey] = []
        for item in order_by:
            name = item.lstrip("-")
            if name not in mapper.column_attrs:
                raise ConfigurationError(f"{mapper.class_.__name__} has no column {name!r}")
            column: Any = mapper.column_attrs[name].columns[0]
            if column.nullable:
                raise ConfigurationError(
                    f"keyset pages need NOT NULL sort columns; "
                    f"{mapper.class_.__name__}.{name} is nullable"
                )
            key = SortKey(name, getattr(entity, name), column.type, item.startswith("-"))
            check_sortable(key)
            keys.append(key)
        named = {key.name for key in keys}
        descending = bool(keys) and keys[-1].descending
        for column in mapper.primary_key:
            name = mapper.get_property_by_column(column).key
            if name not in named:
                keys.append(SortKey(name, getattr(entity, name), column.type, descending))
        return keys


def _positive(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError("limit must be a positive whole number")
    return limit
