"""What a projection holds, resolved against its model and checked at declaration.

A projection is a tree: each node is a class (a dataclass) filled, field by
field in declaration order, from one mapped model. A field is a column or an
expression of the node's row, a column reached through many-to-one
relationships (``"variant.product.name"``), or a relationship: a collection
of child objects, one related object (or None), or the values of one related
column. `harbordb.projection.sql` turns the tree into one statement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table, inspect
from sqlalchemy.orm import InstrumentedAttribute, Mapper, RelationshipProperty
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BooleanClauseList, ColumnElement
from sqlalchemy.sql.expression import ColumnClause

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
    path: tuple[RelationshipProperty[Any], ...] = ()  # many-to-one hops before `column`
    column: Any = None  # path fields: the column at the end of the path
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

    names = field_names(cls)
    mapper, table = mapped_table(model)
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
        elif isinstance(source, str):
            fields.append(_path_field(mapper, name, source, where))
        elif callable(source):
            fields.append(Field(name, "column", expression=source))
        else:
            raise ConfigurationError(
                f"{where}: expected a column attribute, a path string, a Projection, "
                f"related(...) or a callable building an expression; got {type(source).__name__}"
            )
    return Node(cls, model, mapper, table, tuple(fields))


def field_names(cls: Any) -> list[str]:
    """The constructor's fields, in order: of a dataclass, or of a `msgspec.Struct`
    (built in C, about two to three times faster than a slotted frozen dataclass:
    benchmarks/README.md)."""
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    try:
        import msgspec
    except ImportError:
        msgspec = None  # type: ignore[assignment]
    if msgspec is not None and isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return [f.name for f in msgspec.structs.fields(cls)]
    raise ConfigurationError(
        f"{cls!r} is not a dataclass (or a msgspec.Struct): declare projections as dataclasses"
    )


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


def _path_field(mapper: Mapper[Any], name: str, source: str, where: str) -> Field:
    """``"rel.rel.column"``: a column reached through many-to-one relationships."""
    *hops, key = source.split(".")
    path: list[RelationshipProperty[Any]] = []
    current = mapper
    for hop in hops:
        prop = current.relationships.get(hop)
        if prop is None or prop.uselist:
            raise ConfigurationError(
                f"{where}: {hop!r} in {source!r} is not a many-to-one relationship of "
                f"{current.class_.__name__}"
            )
        _check_plain_join(prop, where)
        path.append(prop)
        current = prop.mapper
    if key not in current.column_attrs:
        raise ConfigurationError(f"{where}: {current.class_.__name__} has no column {key!r}")
    column = current.column_attrs[key].columns[0]
    return Field(name, "column", key=None if path else key, path=tuple(path), column=column)


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
