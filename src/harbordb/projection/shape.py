"""What a projection holds, resolved against its model, and the SQL that reads it.

A projection is a tree: each node is a class (a dataclass) filled, field by
field in declaration order, from one mapped model. A field is a column or an
expression of the node's row, or a relationship: a collection of child
objects, one related object (or None), or the values of one related column.
The whole tree reads as one statement: each relationship is a correlated
subquery in the parent's select list, ``array_agg(ROW(...) ORDER BY ...)``
for a collection, ``(SELECT ROW(...))`` for one object. The driver decodes
those records into tuples; `Builder` turns them into the declared objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table, Text, and_, cast, func, inspect, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import InstrumentedAttribute, Mapper, RelationshipProperty, aliased
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BooleanClauseList, ColumnElement
from sqlalchemy.sql.expression import ColumnClause
from sqlalchemy.sql.selectable import FromClause as Alias
from sqlalchemy.types import Enum, TypeDecorator, TypeEngine

from harbordb.errors import ConfigurationError

Expression = Callable[[Any], ColumnElement[Any]]
"""A field computed in SQL: called with the node's aliased entity, returns an expression."""

Kind = Literal["column", "many", "one", "values"]


@dataclass(frozen=True)
class Related:
    """A relationship field declared explicitly: see `related`."""

    attribute: InstrumentedAttribute[Any]
    target: Any  # a Projection, or a column attribute of the related model (values)
    order_by: tuple[str, ...] | None = None


def related(
    attribute: InstrumentedAttribute[Any], target: Any, *, order_by: Sequence[str] | None = None
) -> Related:
    """A field read through relationship `attribute`: objects of projection `target`, or
    (for a collection) the values of `target`, a column attribute of the related model.

    `order_by` names the related model's columns ("-name" descends); by default the
    relationship's own ``order_by``, else the related primary key.
    """
    return Related(attribute, target, tuple(order_by) if order_by is not None else None)


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    expression: Expression | None = None  # column / computed fields
    key: str | None = None  # column fields: the model's attribute key
    prop: RelationshipProperty[Any] | None = None
    child: Node | None = None  # many / one
    value_key: str | None = None  # values: the related column's attribute key
    order_by: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Node:
    cls: type[Any]
    model: type[Any]
    mapper: Mapper[Any]
    table: Table
    fields: tuple[Field, ...]


def mapped_table(model: type[Any]) -> tuple[Mapper[Any], Table]:
    """The mapper of `model` and its one table; `ConfigurationError` for other mappings."""
    try:
        mapper: Mapper[Any] = inspect(model)
    except Exception:
        raise ConfigurationError(f"{model!r} is not a mapped model") from None
    table = mapper.local_table
    if not isinstance(table, Table) or mapper.inherits is not None:
        raise ConfigurationError(
            f"projections read models mapped to one table; {mapper.class_.__name__} is not"
        )
    return mapper, table


def resolve(cls: type[Any], model: type[Any], sources: dict[str, Any]) -> Node:
    """Check a declaration and resolve every field of `cls` against `model`."""
    from harbordb.projection.reads import Projection  # a field may hold a Projection

    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise ConfigurationError(f"{cls!r} is not a dataclass: declare projections as dataclasses")
    mapper, table = mapped_table(model)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = set(sources) - set(names)
    if unknown:
        raise ConfigurationError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    fields: list[Field] = []
    for name in names:
        source = sources.get(name)
        where = f"{cls.__name__}.{name}"
        if source is None:
            source = _attribute(mapper, name, where)
        if isinstance(source, Projection):
            prop = mapper.relationships.get(name)
            if prop is None:
                raise ConfigurationError(
                    f"{where}: {mapper.class_.__name__} has no relationship {name!r}: "
                    "use related(Model.relationship, projection)"
                )
            source = Related(getattr(model, name), source)
        if isinstance(source, Related):
            fields.append(_relationship_field(mapper, name, source, where))
        elif isinstance(source, InstrumentedAttribute):
            fields.append(_column_field(mapper, name, source, where))
        elif callable(source):
            fields.append(Field(name, "column", expression=source))
        else:
            raise ConfigurationError(
                f"{where}: expected a column attribute, a Projection, related(...) or a "
                f"callable building an expression; got {type(source).__name__}"
            )
    return Node(cls, model, mapper, table, tuple(fields))


def _attribute(mapper: Mapper[Any], name: str, where: str) -> Any:
    if name in mapper.column_attrs:
        return getattr(mapper.class_, name)
    if name in mapper.relationships:
        raise ConfigurationError(f"{where} is a relationship: give its projection ({name}=...)")
    raise ConfigurationError(f"{where}: {mapper.class_.__name__} has no column {name!r}")


def _column_field(
    mapper: Mapper[Any], name: str, attribute: InstrumentedAttribute[Any], where: str
) -> Field:
    key = attribute.key
    if attribute.class_ is not mapper.class_ or key not in mapper.column_attrs:
        raise ConfigurationError(
            f"{where}: {attribute} is not a column of {mapper.class_.__name__}"
        )
    return Field(name, "column", expression=lambda entity: getattr(entity, key), key=key)


def _relationship_field(mapper: Mapper[Any], name: str, source: Related, where: str) -> Field:
    from harbordb.projection.reads import Projection

    prop = source.attribute.property
    if not isinstance(prop, RelationshipProperty) or prop.parent is not mapper:
        raise ConfigurationError(f"{where}: {source.attribute} is not a relationship of this model")
    _check_plain_join(prop, where)
    if isinstance(source.target, Projection):
        child: Node = source.target.node
        if child.mapper is not prop.mapper:
            raise ConfigurationError(
                f"{where}: {prop} leads to {prop.mapper.class_.__name__}, but the projection "
                f"reads {child.mapper.class_.__name__}"
            )
        kind: Kind = "many" if prop.uselist else "one"
        return Field(name, kind, prop=prop, child=child, order_by=source.order_by)
    target = source.target
    if not isinstance(target, InstrumentedAttribute) or target.key not in prop.mapper.column_attrs:
        raise ConfigurationError(
            f"{where}: the target of related() is a Projection or a column of "
            f"{prop.mapper.class_.__name__}"
        )
    if not prop.uselist:
        raise ConfigurationError(f"{where}: values of a column need a collection relationship")
    return Field(name, "values", prop=prop, value_key=target.key, order_by=source.order_by)


def _check_plain_join(prop: RelationshipProperty[Any], where: str) -> None:
    """Refuse join conditions beyond column equalities: they would be silently dropped."""
    joins: list[tuple[Any, int]]
    if prop.secondary is None:
        joins = [(prop.primaryjoin, len(prop.local_remote_pairs or ()))]
    else:
        joins = [
            (prop.primaryjoin, len(prop.synchronize_pairs)),
            (prop.secondaryjoin, len(prop.secondary_synchronize_pairs or ())),
        ]
    for condition, pairs in joins:
        clauses = (
            list(condition.clauses)
            if isinstance(condition, BooleanClauseList) and condition.operator is operators.and_
            else [condition]
        )
        plain = all(
            isinstance(c, BinaryExpression)
            and c.operator is operators.eq
            and isinstance(c.left, ColumnClause)
            and isinstance(c.right, ColumnClause)
            for c in clauses
        )
        if not plain or len(clauses) != pairs:
            raise ConfigurationError(
                f"{where}: {prop} has a custom join condition; projections follow "
                "foreign-key column pairs only"
            )


# -- SQL -------------------------------------------------------------------


class Aliases:
    """Distinct table aliases for one statement (a model may appear at several levels)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, table: Table) -> Alias:
        self.count += 1
        return table.alias(f"_h{self.count}")


Build = Callable[[Any], Any]
"""Turns one decoded row (a driver record or a tuple) into the node's object."""


def columns(
    node: Node, alias: Alias, aliases: Aliases, dialect: Dialect, *, nested: bool
) -> tuple[list[Any], Build]:
    """The select-list entries of `node` on `alias`, in field order, and the function
    that builds the node's object from the row they produce."""
    entity = aliased(node.model, alias)
    out: list[Any] = []
    converters: list[tuple[int, Callable[[Any], Any]]] = []
    for index, field in enumerate(node.fields):
        convert: Callable[[Any], Any] | None
        if field.kind == "column":
            assert field.expression is not None
            expression = field.expression(entity)
            sql_type = expression.type
            if nested and _user_defined(sql_type):
                # The driver cannot decode a user-defined type inside an anonymous
                # record: read its text and convert on the client.
                expression = cast(expression, Text)
            out.append(expression)
            convert = _converter(sql_type, dialect)
        else:
            entry, convert = _related_subquery(field, alias, aliases, dialect)
            out.append(entry)
        if convert is not None:
            converters.append((index, convert))
    return out, _builder(node.cls, len(node.fields), converters)


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
        return processor
    return None


def _builder(
    cls: type[Any], width: int, converters: list[tuple[int, Callable[[Any], Any]]]
) -> Build:
    if not converters:

        def build_plain(row: Any) -> Any:
            return cls(*row[:width])

        return build_plain

    def build(row: Any) -> Any:
        values = list(row[:width])
        for index, convert in converters:
            values[index] = convert(values[index])
        return cls(*values)

    return build


def _many(build: Build) -> Callable[[Any], Any]:
    def convert(rows: Any) -> tuple[Any, ...]:
        return () if rows is None else tuple(map(build, rows))

    return convert


def _one(build: Build) -> Callable[[Any], Any]:
    def convert(row: Any) -> Any:
        return None if row is None else build(row)

    return convert


def _values(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def plain(values: Any) -> tuple[Any, ...]:
        return () if values is None else tuple(values)

    def converted(values: Any) -> tuple[Any, ...]:
        return () if values is None else tuple(map(convert, values))  # type: ignore[arg-type]

    return plain if convert is None else converted


def _related_subquery(
    field: Field, parent: Alias, aliases: Aliases, dialect: Dialect
) -> tuple[Any, Callable[[Any], Any]]:
    prop = field.prop
    assert prop is not None
    target_table = prop.mapper.local_table
    assert isinstance(target_table, Table)
    child = aliases(target_table)
    conditions, source = _join(prop, parent, child)
    if field.kind == "values":
        assert field.value_key is not None
        value = getattr(aliased(prop.mapper.class_, child), field.value_key)
        value_type = value.type
        if _user_defined(value_type):
            value = cast(value, Text)
        aggregate = func.array_agg(aggregate_order_by(value, *_child_order(field, prop, child)))
        query = select(aggregate).select_from(source).where(*conditions)
        return query.scalar_subquery(), _values(_converter(value_type, dialect))
    assert field.child is not None
    entries, build = columns(field.child, child, aliases, dialect, nested=True)
    row = func.row(*entries)
    if field.kind == "one":
        query = select(row).select_from(source).where(*conditions)
        return query.scalar_subquery(), _one(build)
    aggregate = func.array_agg(aggregate_order_by(row, *_child_order(field, prop, child)))
    query = select(aggregate).select_from(source).where(*conditions)
    return query.scalar_subquery(), _many(build)


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
