"""Load plans: which relationships a read loads, and how.

A plan names relationship paths (``"items.variant.product"``). A
many-to-one step is a `joinedload` in the statement that loads its parent. A
collection step is one statement of its own after its parents are loaded,
``WHERE fk = ANY(:keys)`` with one array parameter, built once per plan and
run by `harbordb.repository.loading` (the plan rides on the statement as the
execution option ``harbordb_plan``); collections that statement cannot load
(composite or custom join conditions, inheritance) use `selectinload`.

Whatever the plan does not name raises on access instead of querying: a
model whose relationships are all ``lazy="raise"`` already does, and any
other model loaded on the way gets ``raiseload("*")`` (decided per model when
the plan is compiled). A ready-made loader option may stand in a plan beside
the paths; such a plan is loaded the plain way (`selectinload`,
``raiseload("*")`` at every level).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import (
    Mapper,
    RelationshipDirection,
    RelationshipProperty,
    joinedload,
    raiseload,
    selectinload,
)
from sqlalchemy.sql import operators
from sqlalchemy.sql.base import ExecutableOption
from sqlalchemy.sql.elements import BinaryExpression
from sqlalchemy.sql.schema import Column, Table

from harbordb.errors import ConfigurationError

LoadPlan = Sequence[str | ExecutableOption]
"""Relationship paths such as ``"items.variant.product"``, or loader options."""

PLAN_OPTION = "harbordb_plan"
"""Execution option carrying the collection loads (`CollectionLoad`) of a statement."""

ROOT_OPTION = "harbordb_root"
"""Execution option of `select_loaded`'s statements: (mapper, `CompiledPlan`)."""

KEYS = "harbordb_keys"
"""The array parameter of a collection statement: the parents' join values."""

_Tree = dict[RelationshipProperty[Any], dict[Any, Any]]

Joins = tuple[tuple[RelationshipProperty[Any], "Joins"], ...]
"""The many-to-one steps joined into a level's statement, each with the steps below it."""


@dataclass(frozen=True, eq=False)
class CollectionLoad:
    """One collection of a plan, loaded for every parent with one statement.

    `via` are many-to-one keys leading from the objects of the level to the
    parents (``("variant",)`` for ``items.variant.reviews``). `statement`
    selects the children (with `link`, the parent's join value, as a second
    column for a many-to-many) where the join column is ``= ANY(:harbordb_keys)``;
    `child_key` reads that value from a child when there is no `link`.
    `relationship` and `joins` (its many-to-one steps) let
    `harbordb.repository.direct` compile the same load for the driver; it
    keeps what it compiled in `direct` (per dialect).
    """

    via: tuple[str, ...]
    key: str
    parent_key: str
    child_key: str | None
    statement: Select[Any]
    loads: tuple[CollectionLoad, ...]
    relationship: RelationshipProperty[Any]
    joins: Joins
    direct: dict[Any, Any] = field(default_factory=dict)

    def below(self, step: str) -> CollectionLoad:
        """This load seen from one many-to-one step further up."""
        return CollectionLoad(
            (step, *self.via),
            self.key,
            self.parent_key,
            self.child_key,
            self.statement,
            self.loads,
            self.relationship,
            self.joins,
        )


@dataclass(frozen=True, eq=False)
class CompiledPlan:
    """Loader options for the root statement, and the collections loaded after it.

    `joins` are the root level's many-to-one steps, None for a plan with loader
    options of its own (loaded the plain way only); `direct` is
    `harbordb.repository.direct`'s compiled form, per dialect.
    """

    options: tuple[ExecutableOption, ...]
    loads: tuple[CollectionLoad, ...]
    joins: Joins | None = None
    direct: dict[Any, Any] = field(default_factory=dict)


@lru_cache(maxsize=256)
def compile_plan(
    mapper: Mapper[Any], plan: tuple[str | ExecutableOption, ...], owner: str
) -> CompiledPlan:
    """The compiled `plan` on `mapper`'s class.

    Paths sharing a prefix share one loader: ``("items", "items.variant")``
    loads `items` once. A path naming no relationship is a
    `ConfigurationError` that starts with `owner` (where the plan came from).
    """
    tree: _Tree = {}
    extra: list[ExecutableOption] = []
    for entry in plan:
        if isinstance(entry, ExecutableOption):
            extra.append(entry)
            continue
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigurationError(
                f"{owner}: load plan entries are relationship paths or loader options, "
                f"got {entry!r}"
            )
        node, current = tree, mapper
        for step in entry.split("."):
            relationship = current.relationships.get(step)
            if relationship is None:
                known = ", ".join(current.relationships.keys()) or "none"
                raise ConfigurationError(
                    f"{owner}: {entry!r}: {current.class_.__name__} has no relationship "
                    f"{step!r} (relationships: {known})"
                )
            node = node.setdefault(relationship, {})
            current = relationship.mapper
    if extra:
        plain = (raiseload("*"), *(_plain(rel, children) for rel, children in tree.items()))
        return CompiledPlan((*plain, *extra), ())
    options, loads = _level(mapper, tree)
    return CompiledPlan(tuple(options), tuple(loads), _joins(tree))


def needs_raiseload(mapper: Mapper[Any]) -> bool:
    """Whether a relationship of `mapper` would load on access (is not ``lazy="raise"``)."""
    return any(rel.lazy != "raise" for rel in mapper.relationships)


def _level(mapper: Mapper[Any], tree: _Tree) -> tuple[list[Any], list[CollectionLoad]]:
    """Loader options for a statement loading `mapper`'s objects, and the collections after it."""
    options: list[Any] = [raiseload("*")] if needs_raiseload(mapper) else []
    loads: list[CollectionLoad] = []
    for relationship, children in tree.items():
        attribute = getattr(relationship.parent.class_, relationship.key)
        if not relationship.uselist:
            nested, below = _level(relationship.mapper, children)
            options.append(joinedload(attribute).options(*nested))
            loads += [load.below(relationship.key) for load in below]
            continue
        load = _collection(relationship, children)
        if load is None:
            options.append(_plain(relationship, children))
        else:
            loads.append(load)
    return options, loads


def _collection(relationship: RelationshipProperty[Any], tree: _Tree) -> CollectionLoad | None:
    """The one-statement load of a collection, or None when its join is not a plain
    equality of one column (or the target maps an inheritance hierarchy)."""
    target = relationship.mapper
    if target.inherits is not None or target.polymorphic_on is not None:
        return None
    if not _single_equality(relationship.primaryjoin):
        return None
    parent_column, link = relationship.synchronize_pairs[0]
    parent_prop = _mapped_key(relationship.parent, parent_column)
    if parent_prop is None or not isinstance(link, Column):
        return None
    options, loads = _level(target, tree)
    keys = any_(bindparam(KEYS, type_=ARRAY(link.type)))
    secondary = relationship.secondary
    child_key: str | None = None
    if secondary is None:
        if (
            relationship.direction is not RelationshipDirection.ONETOMANY
            or len(relationship.synchronize_pairs) != 1
        ):
            return None
        child_key = _mapped_key(target, link)
        if child_key is None:
            return None
        statement: Select[Any] = select(target).where(link == keys)
    else:
        if (
            relationship.direction is not RelationshipDirection.MANYTOMANY
            or not isinstance(secondary, Table)
            or relationship.secondaryjoin is None
            or not _single_equality(relationship.secondaryjoin)
            or len(relationship.synchronize_pairs) != 1
        ):
            return None
        statement = (
            select(target, link)
            .join_from(target, secondary, relationship.secondaryjoin)
            .where(link == keys)
        )
    if relationship.order_by:
        statement = statement.order_by(*relationship.order_by)
    statement = statement.options(*options)
    return CollectionLoad(
        (),
        relationship.key,
        parent_prop,
        child_key,
        statement,
        tuple(loads),
        relationship,
        _joins(tree),
    )


def _joins(tree: _Tree) -> Joins:
    """The many-to-one steps of a level (joined into its statement), recursively."""
    return tuple((rel, _joins(children)) for rel, children in tree.items() if not rel.uselist)


def _single_equality(condition: Any) -> bool:
    return isinstance(condition, BinaryExpression) and condition.operator is operators.eq


def _mapped_key(mapper: Mapper[Any], column: Any) -> str | None:
    for prop in mapper.column_attrs:
        if len(prop.columns) == 1 and prop.columns[0] is column:
            return prop.key
    return None


def _plain(relationship: RelationshipProperty[Any], children: _Tree) -> ExecutableOption:
    """`selectinload` / `joinedload` with ``raiseload("*")`` at every level."""
    attribute = getattr(relationship.parent.class_, relationship.key)
    strategy = selectinload if relationship.uselist else joinedload
    nested: list[Any] = [_plain(rel, grand) for rel, grand in children.items()]
    return strategy(attribute).options(*nested, raiseload("*"))
