"""Load plans: which relationships a read loads, and how.

A plan names relationship paths (``"items.variant.product"``). Each step
becomes `selectinload` for a collection and `joinedload` for a many-to-one,
nested as the path says, and every level also carries ``raiseload("*")``:
whatever the plan does not name raises on access instead of querying. A
ready-made loader option may stand in a plan beside the paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Mapper, RelationshipProperty, joinedload, raiseload, selectinload
from sqlalchemy.sql.base import ExecutableOption

from harbordb.errors import ConfigurationError

LoadPlan = Sequence[str | ExecutableOption]
"""Relationship paths such as ``"items.variant.product"``, or loader options."""


@lru_cache(maxsize=256)
def compile_plan(
    mapper: Mapper[Any], plan: tuple[str | ExecutableOption, ...], owner: str
) -> tuple[ExecutableOption, ...]:
    """Loader options for `plan` on `mapper`'s class, always led by ``raiseload("*")``.

    Paths sharing a prefix share one loader: ``("items", "items.variant")``
    loads `items` once. A path naming no relationship is a
    `ConfigurationError` that starts with `owner` (where the plan came from).
    """
    tree: dict[RelationshipProperty[Any], dict[Any, Any]] = {}
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
    return (raiseload("*"), *(_loader(rel, children) for rel, children in tree.items()), *extra)


def _loader(relationship: RelationshipProperty[Any], children: dict[Any, Any]) -> ExecutableOption:
    attribute = getattr(relationship.parent.class_, relationship.key)
    strategy = selectinload if relationship.uselist else joinedload
    nested: list[Any] = [_loader(rel, grand) for rel, grand in children.items()]
    return strategy(attribute).options(*nested, raiseload("*"))
