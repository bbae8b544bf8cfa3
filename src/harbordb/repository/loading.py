"""Running a plan's collections: one ``= ANY(:keys)`` statement per collection.

A statement from `RepositoryBase.select_loaded` carries its plan's
collections (`CollectionLoad`) as the execution option ``harbordb_plan``. A
``do_orm_execute`` listener on every `Session` runs the statement, then each
collection's statement on the same session, so the statement counter, the
N+1 detector and the identity map see them as any other, and fills the
collections with `set_committed_value`: loaded, not changed, so later changes
to them are tracked and flushed as usual. A collection already loaded on a
parent is left as it is (unless ``populate_existing``), as `selectinload`
does; its statement still runs, so a read costs the same statements whatever
the session already holds.

Against `selectinload`, the statement is built once per plan (no expanding
IN rendered per call), holds any number of parents (one array parameter, no
batches of 500), and the loader does less bookkeeping per object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Result
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.orm.attributes import instance_dict, set_committed_value

from harbordb.repository.plans import KEYS, PLAN_OPTION, CollectionLoad


def load_collections(
    session: Session,
    objects: Iterable[Any],
    loads: Sequence[CollectionLoad],
    *,
    overwrite: bool = False,
) -> None:
    """Load `loads` for `objects` on `session`: one statement per collection."""
    objects = list(objects)
    for load in loads:
        owners = objects
        for step in load.via:
            owners = _unique(instance_dict(owner).get(step) for owner in owners)
        if not owners:
            continue
        keys = [getattr(o, load.parent_key) for o in owners]
        options = {"populate_existing": True} if overwrite else {}
        result = session.execute(
            load.statement, {KEYS: list(dict.fromkeys(keys))}, execution_options=options
        )
        groups: dict[Any, list[Any]] = {}
        if load.child_key is None:
            for child, link in result:
                groups.setdefault(link, []).append(child)
        else:
            child_key = load.child_key
            for child in result.scalars():
                groups.setdefault(getattr(child, child_key), []).append(child)
        for owner, key in zip(owners, keys, strict=True):
            if overwrite or load.key not in instance_dict(owner):
                set_committed_value(owner, load.key, groups.get(key) or [])
        if load.loads:
            children = _unique(child for group in groups.values() for child in group)
            load_collections(session, children, load.loads, overwrite=overwrite)


def _unique(objects: Iterable[Any]) -> list[Any]:
    seen: dict[int, Any] = {}
    for obj in objects:
        if obj is not None:
            seen.setdefault(id(obj), obj)
    return list(seen.values())


@event.listens_for(Session, "do_orm_execute")
def _run_plan(state: ORMExecuteState) -> Result[Any] | None:
    """Run a planned statement, then its collections; the rows come back unchanged."""
    plan = state.execution_options.get(PLAN_OPTION)
    if plan is None or not state.is_select:
        return None
    model, loads = plan
    frozen = state.invoke_statement().freeze()
    parents = [row[0] for row in frozen() if isinstance(row[0], model)]
    overwrite = bool(state.execution_options.get("populate_existing"))
    load_collections(state.session, parents, loads, overwrite=overwrite)
    return frozen()
