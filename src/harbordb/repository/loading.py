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

Where a level qualifies (`harbordb.repository.direct`), its statement runs on
the driver instead, and its objects are built from the rows into the same
identity map; the counters and observers see it as a direct statement.
`get_direct` (`get` without locks) and `window_direct` (`fetch_window` of a
query run before) read the root level that way too, so the whole plan skips
SQLAlchemy's execution layer. Each returns `NOT_DIRECT`, having sent
nothing, when the read must go through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, event
from sqlalchemy.engine import Result
from sqlalchemy.orm import Mapper, ORMExecuteState, Session
from sqlalchemy.orm.attributes import instance_dict, set_committed_value

from harbordb.repository import direct, nested
from harbordb.repository.objects import Hydrator
from harbordb.repository.plans import (
    KEYS,
    PLAN_OPTION,
    ROOT_OPTION,
    CollectionLoad,
    CompiledPlan,
)
from harbordb.timestamps import text_times


def load_collections(
    session: Session,
    objects: Iterable[Any],
    loads: Sequence[CollectionLoad],
    *,
    overwrite: bool = False,
    hydrator: Hydrator | None = None,
) -> None:
    """Load `loads` for `objects` on `session`: one statement per collection.

    A collection whose level qualifies (`harbordb.repository.direct`) runs on the
    driver and its objects are built from the rows; any other through the session.
    """
    objects = list(objects)
    for load in loads:
        owners = objects
        for step in load.via:
            owners = _unique(instance_dict(owner).get(step) for owner in owners)
        if not owners:
            continue
        keys = [getattr(o, load.parent_key) for o in owners]
        values = {KEYS: list(dict.fromkeys(keys))}
        groups: dict[Any, list[Any]] = {}
        held = direct.held_connection(session, load.relationship.mapper)
        statement = None
        if held is not None:
            statement = direct.collection_statement(load, held.dialect, text_times(held.driver))
        if (
            held is not None
            and statement is not None
            and direct.usable(session, statement, overwrite)
        ):
            if hydrator is None:
                hydrator = Hydrator(session, overwrite)
            build, entity, link = hydrator.build, statement.entity, statement.link
            for row in direct.run(session, held, statement, values):
                groups.setdefault(row[link], []).append(build(entity, row))
        else:
            options = {"populate_existing": True} if overwrite else {}
            result = session.execute(load.statement, values, execution_options=options)
            if load.child_key is None:
                for child, link in result:
                    groups.setdefault(link, []).append(child)
            else:
                child_key = load.child_key
                for child in result.scalars():
                    groups.setdefault(getattr(child, child_key), []).append(child)
        set_loaded = None if hydrator is None else hydrator.collection_setter(load.relationship)
        for owner, key in zip(owners, keys, strict=True):
            if overwrite or load.key not in instance_dict(owner):
                if set_loaded is None:
                    set_committed_value(owner, load.key, groups.get(key) or [])
                else:
                    set_loaded(owner, groups.get(key) or [])
        if load.loads:
            children = _unique(child for group in groups.values() for child in group)
            load_collections(session, children, load.loads, overwrite=overwrite, hydrator=hydrator)


NOT_DIRECT: Any = object()
"""What `get_direct` returns when the plan's root level is not direct."""


def get_direct(
    session: Session, mapper: Mapper[Any], plan: CompiledPlan, params: Mapping[str, Any]
) -> Any:
    """The object with these primary key parameters (or None), its plan loaded, read on
    the driver; `NOT_DIRECT` when the root level does not qualify (nothing was sent)."""
    held = direct.held_connection(session, mapper)
    if held is None:
        return NOT_DIRECT
    text = text_times(held.driver)
    whole = nested.root_statement(plan, mapper, held.dialect, text)
    if whole is not None and direct.usable(session, whole, False):
        session._autoflush()
        rows = direct.run(session, held, whole, params)
        found = nested.build(Hydrator(session, False), whole, rows)
        return found[0] if found else None
    statement = direct.root_statement(plan, mapper, held.dialect, text)
    if statement is None or not direct.usable(session, statement, False):
        return NOT_DIRECT
    session._autoflush()
    hydrator = Hydrator(session, False)
    found = [
        hydrator.build(statement.entity, row)
        for row in direct.run(session, held, statement, params)
    ]
    if found and plan.loads:
        load_collections(session, found, plan.loads, hydrator=hydrator)
    return found[0] if found else None


def window_direct(session: Session, query: Select[Any], values: Mapping[str, Any]) -> Any:
    """A `windowed` query's objects and whether a row follows, its plan loaded, read on
    the driver; `NOT_DIRECT` when it does not qualify (nothing was sent)."""
    root = query.get_execution_options().get(ROOT_OPTION)
    if root is None:
        return NOT_DIRECT
    mapper, plan = root
    held = direct.held_connection(session, mapper)
    if held is None:
        return NOT_DIRECT
    text = text_times(held.driver)
    statement = direct.window_statement(query, mapper, plan, held.dialect, text)
    if statement is None:
        return NOT_DIRECT
    overwrite = bool(query.get_execution_options().get("populate_existing"))
    whole = nested.window_statement(query, mapper, plan, held.dialect, text)
    if whole is not None and direct.usable(session, whole, overwrite):
        session._autoflush()
        rows = direct.run(session, held, whole, values)
        objects = nested.build(Hydrator(session, overwrite), whole, rows)
        return _unique_rows(objects, rows, whole.link), bool(rows) and rows[-1][-1] is not None
    if not direct.usable(session, statement, overwrite):
        return NOT_DIRECT
    session._autoflush()
    rows = direct.run(session, held, statement, values)
    hydrator = Hydrator(session, overwrite)
    build, entity, extras = hydrator.build, statement.entity, statement.link
    items: dict[Any, Any] = {}  # unique rows, as SQLAlchemy's .unique() keeps them
    for row in rows:
        obj = build(entity, row)
        items.setdefault((id(obj), *row[extras:]), obj)
    found = list(items.values())
    if found and plan.loads:
        load_collections(session, found, plan.loads, overwrite=overwrite, hydrator=hydrator)
    return found, bool(rows) and rows[-1][-1] is not None


def _unique_rows(objects: Sequence[Any], rows: Sequence[Any], extras: int) -> list[Any]:
    """The objects of unique rows, as SQLAlchemy's .unique() keeps them."""
    items: dict[Any, Any] = {}
    for obj, row in zip(objects, rows, strict=True):
        items.setdefault((id(obj), *row[extras:]), obj)
    return list(items.values())


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
