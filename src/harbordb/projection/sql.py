"""The SQL of a projection, and where each field's value lies in its rows.

The whole tree reads as one statement: each relationship is a correlated
subquery in the parent's select list, ``array_agg(ROW(...) ORDER BY ...)``
for a collection, ``(SELECT ROW(...))`` for one object, ``array_agg(column)``
for the values of a column. Path fields (``"variant.product.name"``) LEFT
JOIN their many-to-one tables into the level that reads them. The driver
decodes the records into tuples; `harbordb.projection.build` turns them into
the declared objects, converting only what the driver cannot (enums,
`TypeDecorator`s) or what is cheaper read as text (timestamps:
`harbordb.timestamps`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, Text, and_, cast, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import RelationshipProperty, aliased
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause as Alias
from sqlalchemy.types import Enum, String, TypeDecorator, TypeEngine

from harbordb import timestamps
from harbordb.errors import ConfigurationError
from harbordb.projection.build import Builder, Part
from harbordb.projection.shape import Field, Node


class Aliases:
    """Distinct table aliases for one statement (a model may appear at several levels)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, table: Table) -> Alias:
        self.count += 1
        return table.alias(f"_h{self.count}")


class Joins:
    """The many-to-one tables one level LEFT JOINs for its path fields, once per path."""

    def __init__(self, base: Alias, aliases: Aliases) -> None:
        self.base = base
        self.aliases = aliases
        self.joined: dict[tuple[RelationshipProperty[Any], ...], Alias] = {}
        self.conditions: list[tuple[Alias, ColumnElement[bool]]] = []

    def alias(self, path: tuple[RelationshipProperty[Any], ...]) -> Alias:
        parent = self.base
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            found = self.joined.get(prefix)
            if found is None:
                prop = path[depth - 1]
                table = prop.mapper.local_table
                assert isinstance(table, Table)
                found = self.joined[prefix] = self.aliases(table)
                pairs = prop.local_remote_pairs or ()
                on = and_(*(_on(found, remote) == _on(parent, local) for local, remote in pairs))
                self.conditions.append((found, on))
            parent = found
        return parent

    def apply(self, source: Any) -> Any:
        for alias, on in self.conditions:
            source = source.outerjoin(alias, on)
        return source


def columns(
    node: Node,
    alias: Alias,
    aliases: Aliases,
    dialect: Dialect,
    *,
    nested: bool,
    text_times: bool,
    relations: list[tuple[int, Field]] | None = None,
) -> tuple[list[Any], list[Part], Joins]:
    """The select-list entries of `node` on `alias`, in field order; where each field's
    value comes from (`harbordb.projection.build.Part`); the joins they need.
    With `text_times`, timestamps are read as text (`readable`).

    A part's ``index`` is its entry's position in the row; the parts themselves are
    in field order. With `relations` (a list to fill, with each field's position),
    relationship fields are not nested: they have no entry, and the caller reads
    them with statements of their own (`found` parts, set by the caller)."""
    entity = aliased(node.model, alias)
    joins = Joins(alias, aliases)
    out: list[Any] = []
    parts: list[Part] = []
    for position, field in enumerate(node.fields):
        index = len(out)  # where this field's entry goes in the row
        if field.kind == "column":
            if field.path:
                expression = _on(joins.alias(field.path), field.column)
            else:
                assert field.expression is not None
                expression = field.expression(entity)
            expression, convert = readable(expression, dialect, nested, text_times)
            out.append(expression)
            fast = timestamps.PARSE if convert is timestamps.timestamp else None
            parts.append(Part("value", index, convert, fast=fast))
        elif relations is not None:  # no entry: the caller points the part at a key
            relations.append((position, field))
            parts.append(Part("found-one" if field.kind == "one" else "found-many", -1))
        else:
            entry, part = _related_subquery(field, index, alias, aliases, dialect, text_times)
            out.append(entry)
            parts.append(part)
    return out, parts, joins


def carried(node: Node, parts: list[Part], column: Any) -> int | None:
    """Where rows of `node` (not nested) already carry table `column`, as a plain
    column field: a key the per-level shape needs is then not selected twice."""
    for field, part in zip(node.fields, parts, strict=True):
        if (
            field.key is not None
            and not field.path
            and part.kind == "value"
            and part.call is not timestamps.timestamp  # the row holds its text
            and node.mapper.column_attrs[field.key].columns[0] is column
        ):
            return part.index
    return None


def build_of(node: Node, parts: list[Part], width: int) -> Builder:
    """The builder of `node`'s objects from rows of `width` values that `parts` locate."""
    return Builder(node.cls, [field.name for field in node.fields], parts, width)


def readable(
    expression: Any, dialect: Dialect, nested: bool, text_times: bool
) -> tuple[Any, Callable[[Any], Any] | None]:
    """`expression` as the statement selects it, and what converts the driver's value.

    A timestamp of a plain type is selected as text with `text_times`:
    `harbordb.timestamps`. A user-defined type (a native enum) inside an
    anonymous record is selected as text too: the driver cannot decode it there.
    """
    sql_type = expression.type
    if text_times and timestamps.readable_as_text(sql_type):
        return cast(expression, Text), timestamps.timestamp
    if nested and _user_defined(sql_type):
        expression = cast(expression, Text)
    return expression, _converter(sql_type, dialect)


def _user_defined(sql_type: TypeEngine[Any]) -> bool:
    return isinstance(sql_type, Enum) and bool(sql_type.native_enum)


def _converter(sql_type: TypeEngine[Any] | None, dialect: Dialect) -> Callable[[Any], Any] | None:
    """What turns the driver's value into the model's Python value, when they differ:
    enums (text to members) and `TypeDecorator` types. Built-in types come decoded."""
    if sql_type is None:
        return None
    if isinstance(sql_type, TypeDecorator):
        decorator = sql_type

        def process(value: Any) -> Any:
            return decorator.process_result_value(value, dialect)

        return process
    if isinstance(sql_type, Enum):
        processor: Callable[[Any], Any] | None = sql_type.result_processor(  # type: ignore[no-untyped-call]
            dialect, None
        )
        if processor is None:
            return None
        # A dict lookup in C per value; anything unlisted goes to SQLAlchemy's processor
        # (which raises its LookupError for a value that is not the enum's).
        table = Lookup(processor)
        table.update({value: processor(value) for value in sql_type.enums})
        table[None] = None
        return table
    return None


class Lookup(dict[Any, Any]):
    """Stored enum values to the model's values; a miss asks `processor`. Callable as a
    converter; the builders subscript it instead (no call per value)."""

    def __init__(self, processor: Callable[[Any], Any]) -> None:
        super().__init__()
        self.processor = processor

    def __missing__(self, value: Any) -> Any:
        return self.processor(value)

    def __call__(self, value: Any) -> Any:
        return self[value]


def _related_subquery(
    field: Field, index: int, parent: Alias, aliases: Aliases, dialect: Dialect, text_times: bool
) -> tuple[Any, Part]:
    """The correlated subquery reading relationship `field` (at `index`) into one value."""
    prop = field.prop
    assert prop is not None
    target_table = prop.mapper.local_table
    assert isinstance(target_table, Table)
    child = aliases(target_table)
    conditions, source = _join(prop, parent, child)
    if field.kind == "values":
        value, convert = values_of(field, prop, child, dialect, text_times)
        aggregate = func.array_agg(aggregate_order_by(value, *_child_order(field, prop, child)))
        query = select(aggregate).select_from(source).where(*conditions)
        return query.scalar_subquery(), Part("values", index, convert)
    assert field.child is not None
    entries, parts, joins = columns(
        field.child, child, aliases, dialect, nested=True, text_times=text_times
    )
    build = build_of(field.child, parts, len(entries))
    source = joins.apply(source)
    row = func.row(*entries)
    if field.kind == "one":
        query = select(row).select_from(source).where(*conditions)
        return query.scalar_subquery(), Part("one", index, build)
    aggregate = func.array_agg(aggregate_order_by(row, *_child_order(field, prop, child)))
    query = select(aggregate).select_from(source).where(*conditions)
    return query.scalar_subquery(), Part("many", index, build)


def values_of(
    field: Field, prop: RelationshipProperty[Any], child: Alias, dialect: Dialect, text_times: bool
) -> tuple[Any, Callable[[Any], Any] | None]:
    """The related column a ``values`` field reads on `child`, and its converter."""
    assert field.value_key is not None
    value = getattr(aliased(prop.mapper.class_, child), field.value_key)
    if isinstance(value.type, String):
        # text[] has a built-in decoder; varchar[] (and enum arrays) would make the
        # driver look the array type up on every new connection.
        return cast(value, Text), _converter(value.type, dialect)
    return readable(value, dialect, True, text_times)


def _join(
    prop: RelationshipProperty[Any], parent: Alias, child: Alias
) -> tuple[list[ColumnElement[bool]], Any]:
    """The correlation of `child` rows to the `parent` row, and what to select from."""
    if prop.secondary is None:
        conditions = [
            _on(child, remote) == _on(parent, local)
            for local, remote in prop.local_remote_pairs or ()
        ]
        return conditions, child
    link = prop.secondary.alias()
    conditions = [_on(link, s) == _on(parent, p) for p, s in prop.synchronize_pairs]
    pairs = prop.secondary_synchronize_pairs or ()
    joined = child.join(link, and_(*(_on(link, s) == _on(child, c) for c, s in pairs)))
    return conditions, joined


def _on(alias: Alias, column: Any) -> ColumnElement[Any]:
    found = alias.corresponding_column(column)
    if found is None:  # pragma: no cover - pairs always name the aliased table's columns
        raise ConfigurationError(f"column {column} is not in {alias}")
    return found


def _child_order(field: Field, prop: RelationshipProperty[Any], child: Alias) -> list[Any]:
    mapper = prop.mapper
    if field.order_by is not None:
        entity = aliased(mapper.class_, child)
        order = []
        for name in field.order_by:
            key = name.lstrip("-")
            if key not in mapper.column_attrs:
                raise ConfigurationError(f"{mapper.class_.__name__} has no column {key!r}")
            column = getattr(entity, key)
            order.append(column.desc() if name.startswith("-") else column.asc())
        return order
    if prop.order_by:
        return [_adapt_order(item, child) for item in prop.order_by]
    return [_on(child, column) for column in mapper.primary_key]


def _adapt_order(item: Any, child: Alias) -> Any:
    """A relationship's ``order_by`` entry (a column, maybe descending) on `child`."""
    modifier = getattr(item, "modifier", None)
    element = getattr(item, "element", item) if modifier is not None else item
    column = _on(child, element)
    if modifier is operators.desc_op:
        return column.desc()
    return column
