"""A load plan's statements run on the driver, its ORM objects built from the rows.

SQLAlchemy's execution layer and row loading cost more per read than the
driver does (ARCHITECTURE.md, "where the read time goes"). Where a plan's
level qualifies, its statement is compiled once per dialect into SQL text and
run on the unit of work's asyncpg connection (`harbordb.driver.fetch`:
the same transaction, statement counters and observers), and its objects are
made the way SQLAlchemy's loading makes them (`harbordb.repository.objects`):
a new instance from the class manager, the columns in its ``__dict__``, its
identity key, registered as persistent in the session's identity map;
many-to-one steps are set as loaded, collections with `set_committed_value`.
They are ordinary tracked objects, whose changes flush as usual. An object
already in the identity map is kept, its unloaded columns filled in; with
``populate_existing`` it is overwritten, as SQLAlchemy does. A `get` or a
page whose collections all qualify reads them nested in its own statement
(`harbordb.repository.nested`); other reads send one statement per level.

A level qualifies when its model maps one table without inheritance, every
column attribute is a column of that table loaded with the object (nothing
deferred, no SQL expressions), every relationship is ``lazy="raise"`` (no
loader options must ride on the objects), joins are single-column
equalities, and each column type's result processing on the dialect is known
without the server's column type (an Enum's is applied as SQLAlchemy applies
it; `Numeric` and `Float` depend on the server's type, so such a level stays
with SQLAlchemy). At run time, listeners of a model's ``load`` (or, with
``populate_existing``, ``refresh``) event or of the session's
``loaded_as_persistent`` send the read through SQLAlchemy as well.

Non-public SQLAlchemy API used (pinned ``<2.2``; `SQLALCHEMY_MEMBERS` is
checked by ``tests/integration/test_repository_direct.py``):
``IdentityMap._dict`` and ``_wr``, ``ClassManager._state_constructor``,
``InstanceState._commit`` / ``_commit_all``, ``Mapper._identity_class``,
``Session._autoflush``, ``sqlalchemy.util.await_``, and for collections
``CollectionAdapter(impl, state, data)`` and the attribute impl's
``collection_factory`` and ``dispatch``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Date,
    DateTime,
    Enum,
    Integer,
    Interval,
    LargeBinary,
    Select,
    String,
    Text,
    Time,
    TypeDecorator,
    Uuid,
    any_,
    bindparam,
    cast,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Mapper, RelationshipDirection, RelationshipProperty, Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, UnaryExpression
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.util import await_

from harbordb import timestamps
from harbordb.driver import Held, fetch
from harbordb.querycount import has_direct_observers
from harbordb.repository.objects import Entity, entity_of
from harbordb.repository.plans import KEYS, CollectionLoad, CompiledPlan, Joins, needs_raiseload

# Non-public members this module relies on: {owner: members}.
SQLALCHEMY_MEMBERS = {
    "IdentityMap": ("_dict", "_wr"),
    "ClassManager": ("_state_constructor",),
    "InstanceState": ("_commit", "_commit_all"),
    "Mapper": ("_identity_class",),
    "Session": ("_autoflush",),
    "CollectionAttributeImpl": ("collection_factory", "dispatch"),
}

_HELD = "harbordb.driver.connection"  # shared with harbordb.driver.held
_UNIT_OF_WORK = "harbordb.unit_of_work"  # harbordb.uow.UNIT_OF_WORK_KEY


class _NotDirect(Exception):
    """A level that must be loaded by SQLAlchemy."""


@dataclass(frozen=True, eq=False)
class Statement:
    """A compiled statement of a plan: SQL text, its parameters in order (each with
    its bind processor), the entity its rows make, and where the link value is."""

    sql: str
    params: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    entity: Entity
    link: int
    mappers: tuple[Mapper[Any], ...]
    compiled: Any = None  # set when the statement has parameters of its own (a page's)
    nests: tuple[Any, ...] = ()  # collections nested in the rows (`harbordb.repository.nested`)

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for `values` (by parameter name)."""
        if self.compiled is not None:
            values = self.compiled.construct_params(values)
        return [
            values[name] if process is None else process(values[name])
            for name, process in self.params
        ]


def collection_statement(
    load: CollectionLoad, dialect: Dialect, text_times: bool
) -> Statement | None:
    """`load` compiled for the driver, or None when SQLAlchemy must load it. With
    `text_times`, timestamps are read as text (`harbordb.timestamps`)."""
    return compiled_once(
        load.direct, (id(dialect), text_times), lambda: _collection(load, dialect, text_times)
    )


def root_statement(
    plan: CompiledPlan, mapper: Mapper[Any], dialect: Dialect, text_times: bool
) -> Statement | None:
    """The plan's root level by primary key (``:harbordb_pk_0``...), or None."""

    def build() -> Statement:
        if plan.joins is None:
            raise _NotDirect
        return _by_pk(mapper, plan.joins, dialect, text_times)

    return compiled_once(plan.direct, (id(dialect), text_times), build)


def compiled_once(
    cache: dict[Any, Statement | None], key: Any, build: Callable[[], Statement]
) -> Statement | None:
    """``cache[key]``, from `build` the first time: None where it raised `_NotDirect`
    (the level is SQLAlchemy's to load, for good)."""
    if key not in cache:
        try:
            cache[key] = build()
        except _NotDirect:
            cache[key] = None
    return cache[key]


# Windowed queries seen (an empty dict) and compiled (by dialect): a query is compiled
# the second time it runs, so one built anew for every call stays with SQLAlchemy.
_WINDOWS: WeakKeyDictionary[Any, dict[tuple[int, bool], Statement | None]] = WeakKeyDictionary()


def window_statement(
    query: Select[Any], mapper: Mapper[Any], plan: CompiledPlan, dialect: Dialect, text_times: bool
) -> Statement | None:
    """A `windowed` query of `select_loaded` for the driver, or None (not yet, or
    never: its root level joins or it selects other entities)."""
    compiled = _WINDOWS.get(query)
    if compiled is None:
        _WINDOWS[query] = {}
        return None
    return compiled_once(
        compiled,
        (id(dialect), text_times),
        lambda: _window(query, mapper, plan, dialect, text_times),
    )


def held_connection(session: Session, mapper: Mapper[Any]) -> Held | None:
    """The asyncpg connection of `session`'s transaction for `mapper`'s bind (None on
    another driver); the same cache as `harbordb.driver.held`. Before the session
    has begun, the connection it is bound to, where a read needs no transaction of
    the session's (`_unbegun`)."""
    bind = session.get_bind(mapper)
    transaction = session.get_transaction()
    if transaction is None:
        unbegun = _unbegun(session, bind)
        if unbegun is not None:
            return unbegun if unbegun.dialect.driver == "asyncpg" else None
    found: Held | None = session.info.get(_HELD)
    if (
        found is None
        or transaction is None
        or found.transaction is not transaction
        or found.connection.closed
        or found.connection.invalidated
        or found.connection.engine is not bind.engine
    ):
        connection = session.connection(bind_arguments={"mapper": mapper})
        pooled = connection.connection
        found = Held(
            session.get_transaction(), connection, pooled.driver_connection, pooled.dbapi_connection
        )
        session.info[_HELD] = found
    return found if found.dialect.driver == "asyncpg" else None


def _unbegun(session: Session, bind: Any) -> Held | None:
    """`bind`, when `session` is a unit of work's, bound to the connection the unit of
    work checked out (`harbordb.checkout`), nothing has begun on it, nothing listens
    for the session's transaction to begin and no statement observer is on the engine.

    Beginning the session's transaction there sends nothing to the server (the
    driver begins, when a read needs it: `harbordb.driver.fetch`), so a read goes
    without one, as a unit of work's projections do: no `SessionTransaction` to
    make and close (about 50 us). The session begins one, on the same connection,
    with its first statement through SQLAlchemy (a flush, a commit); a transaction
    the driver began is the one that statement runs in, and the pool's reset at
    checkin rolls back one left open. On a connection of the caller's, the session's
    transaction is what ends a transaction the read began: kept."""
    work = session.info.get(_UNIT_OF_WORK)
    if (
        getattr(work, "_connection", None) is not bind
        or not isinstance(bind, Connection)
        or bind.in_transaction()
        or bind.closed
        or bind.invalidated
        or session.dispatch.after_begin
        or has_direct_observers(bind.engine)
    ):
        return None
    pooled = bind.connection
    return Held(None, bind, pooled.driver_connection, pooled.dbapi_connection)


def usable(session: Session, statement: Statement, overwrite: bool) -> bool:
    """No event listener that SQLAlchemy's loading would call for these objects."""
    if session.dispatch.loaded_as_persistent:
        return False
    for mapper in statement.mappers:
        dispatch = mapper.class_manager.dispatch
        if dispatch.load or (overwrite and dispatch.refresh):
            return False
    return True


def run(session: Session, held: Held, statement: Statement, values: Mapping[str, Any]) -> Any:
    """The rows of `statement` (inside SQLAlchemy's greenlet, as an ORM execution); a
    connection lost on the way is discarded and raised as `Unavailable` (`fetch`)."""
    return await_(fetch(held, statement.sql, statement.args(values)))


# -- compiling ------------------------------------------------------------------


class _Select:
    """Columns and FROM clause of a statement being compiled, entity by entity; with
    `nested`, the columns of a record nested in an array (`harbordb.repository.nested`);
    with `text_times`, timestamps read as text (`harbordb.timestamps`)."""

    def __init__(
        self, dialect: Dialect, from_: Any, nested: bool = False, text_times: bool = False
    ) -> None:
        self.dialect = dialect
        self.columns: list[Any] = []
        self.from_ = from_
        self.mappers: list[Mapper[Any]] = []
        self.nested = nested
        self.text_times = text_times

    def entity(self, mapper: Mapper[Any], table: Any, joins: Joins) -> Entity:
        _check_mapper(mapper)
        self.mappers.append(mapper)
        positions: dict[Any, int] = {}
        columns = []
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            positions[column] = len(self.columns)
            process = _result_processor(column, self.dialect)
            selected = table.c[column.key]
            if (
                self.text_times
                and process is None
                and timestamps.readable_as_text(column.type)
                and column not in mapper.primary_key  # identity keys stay the driver's values
            ):
                selected, process = cast(selected, Text), timestamps.timestamp
            elif self.nested:
                selected = _in_record(column, selected)
            columns.append((prop.key, len(self.columns), process))
            self.columns.append(selected)
        joined = []
        for relationship, below in joins:
            local, remote = _many_to_one(relationship)
            alias = remote.table.alias()
            self.from_ = self.from_.outerjoin(alias, table.c[local.key] == alias.c[remote.key])
            joined.append((relationship.key, self.entity(relationship.mapper, alias, below)))
        return entity_of(
            mapper,
            mapper._identity_class,
            tuple(columns),
            tuple(positions[column] for column in mapper.primary_key),
            bool(mapper.allow_partial_pks),
            tuple(joined),
        )

    def compile(self, stmt: Any, entity: Entity, link: int) -> Statement:
        compiled = stmt.compile(dialect=self.dialect)
        names = compiled.positiontup
        if names is None or "POSTCOMPILE" in compiled.string:
            raise _NotDirect
        params = []
        for name in names:
            impl = compiled.binds[name].type.dialect_impl(self.dialect)
            params.append((name, impl.bind_processor(self.dialect)))
        return Statement(compiled.string, tuple(params), entity, link, tuple(self.mappers))


def _by_pk(mapper: Mapper[Any], joins: Joins, dialect: Dialect, text_times: bool) -> Statement:
    built, entity, stmt = by_pk_parts(mapper, joins, dialect, text_times)
    return built.compile(stmt, entity, -1)


def by_pk_parts(
    mapper: Mapper[Any], joins: Joins, dialect: Dialect, text_times: bool
) -> tuple[_Select, Entity, Select[Any]]:
    """The root level by primary key: its columns, entity and statement, uncompiled."""
    table = mapper.local_table
    built = _Select(dialect, table, text_times=text_times)
    entity = built.entity(mapper, table, joins)
    pk = mapper.primary_key
    params = [bindparam(f"harbordb_pk_{i}", type_=column.type) for i, column in enumerate(pk)]
    condition = pk[0] == params[0] if len(pk) == 1 else tuple_(*pk) == tuple_(*params)
    stmt = select(*built.columns).select_from(built.from_).where(condition)
    return built, entity, stmt


def _window(
    query: Select[Any], mapper: Mapper[Any], plan: CompiledPlan, dialect: Dialect, text_times: bool
) -> Statement:
    built, entity, extras = window_parts(query, mapper, plan, dialect, text_times)
    stmt = query.with_only_columns(*built.columns, *extras, maintain_column_froms=True)
    return window_compiled(built, entity, stmt, len(built.columns), dialect)


def window_parts(
    query: Select[Any], mapper: Mapper[Any], plan: CompiledPlan, dialect: Dialect, text_times: bool
) -> tuple[_Select, Entity, list[Any]]:
    """A window query's root level: its columns, entity and the query's other columns."""
    described = query.column_descriptions
    if plan.options or described[0]["expr"] is not mapper.class_:
        raise _NotDirect
    extras = [item["expr"] for item in described[1:]]
    if not all(isinstance(extra, ColumnElement) for extra in extras):
        raise _NotDirect
    table = mapper.local_table
    built = _Select(dialect, table, text_times=text_times)
    entity = built.entity(mapper, table, ())
    return built, entity, extras


def window_compiled(
    built: _Select, entity: Entity, stmt: Select[Any], link: int, dialect: Dialect
) -> Statement:
    """A window statement whose extra columns start at `link`, compiled."""
    statement = built.compile(stmt, entity, link)  # (PostgreSQL locks no windowed rows)
    return Statement(
        statement.sql,
        statement.params,
        entity,
        link,
        statement.mappers,
        stmt.compile(dialect=dialect),
    )


def _collection(load: CollectionLoad, dialect: Dialect, text_times: bool) -> Statement:
    relationship = load.relationship
    target = relationship.mapper
    table = target.local_table
    link = relationship.synchronize_pairs[0][1]
    secondary = relationship.secondary
    from_: Any = table if secondary is None else table.join(secondary, relationship.secondaryjoin)
    built = _Select(dialect, from_, text_times=text_times)
    entity = built.entity(target, table, load.joins)
    position = len(built.columns)
    built.columns.append(link)
    keys = any_(bindparam(KEYS, type_=ARRAY(link.type)))
    stmt = select(*built.columns).select_from(built.from_).where(link == keys)
    if relationship.order_by:
        stmt = stmt.order_by(*(_ordering(item, table) for item in relationship.order_by))
    return built.compile(stmt, entity, position)


def _check_mapper(mapper: Mapper[Any]) -> None:
    table = mapper.local_table
    if (
        mapper.inherits is not None
        or mapper.polymorphic_on is not None
        or not isinstance(table, Table)
        or mapper.persist_selectable is not table
        or mapper.always_refresh
        or needs_raiseload(mapper)
    ):
        raise _NotDirect
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if len(prop.columns) != 1 or prop.deferred or not isinstance(column, Column):
            raise _NotDirect
        if column.table is not table:
            raise _NotDirect


def _many_to_one(relationship: RelationshipProperty[Any]) -> tuple[Column[Any], Column[Any]]:
    """The (local foreign key, remote key) columns of a plain many-to-one."""
    condition = relationship.primaryjoin
    pairs = relationship.local_remote_pairs or []
    if (
        relationship.direction is not RelationshipDirection.MANYTOONE
        or relationship.secondary is not None
        or not isinstance(condition, BinaryExpression)
        or condition.operator is not operators.eq
        or len(pairs) != 1
    ):
        raise _NotDirect
    local, remote = pairs[0]
    if not isinstance(local, Column) or not isinstance(remote, Column):
        raise _NotDirect
    if local.table is not relationship.parent.local_table:
        raise _NotDirect
    if remote.table is not relationship.mapper.local_table:
        raise _NotDirect
    return local, remote


def _ordering(item: Any, table: Any) -> ColumnElement[Any]:
    """A relationship's ORDER BY item, if it orders by a column of the child's table."""
    column = item.element if isinstance(item, UnaryExpression) else item
    if not isinstance(column, Column) or column.table is not table:
        raise _NotDirect
    ordering: ColumnElement[Any] = item
    return ordering


# Types the driver decodes inside an anonymous record as at the top level: built-in
# server types, each decoded by the type the record carries (so a column whose type
# changed under a live connection still decodes as what it is now). SQLAlchemy's
# generic and SQL-standard classes, and PostgreSQL's own classes of these types; not
# their other subclasses (CITEXT is a TEXT of an extension's type).
_RECORD_SAFE = (Integer, String, Boolean, DateTime, Date, Time, Interval, LargeBinary, Uuid)
_RECORD_SAFE_PG = (postgresql.TIMESTAMP, postgresql.TIME, postgresql.INTERVAL, postgresql.BYTEA)


def _in_record(column: Any, selected: Any) -> Any:
    """`selected` as a field of a nested record: a native enum (a user-defined server
    type, which the driver cannot decode inside an anonymous record) as its text, which
    the Enum's result processor reads; any type not known to be built in is not direct."""
    sql_type = column.type
    if isinstance(sql_type, TypeDecorator):
        sql_type = sql_type.impl_instance
    if isinstance(sql_type, Enum):
        return cast(selected, Text)
    generic = type(sql_type).__module__ == "sqlalchemy.sql.sqltypes"
    if (
        not (generic and isinstance(sql_type, _RECORD_SAFE))
        and type(sql_type) not in _RECORD_SAFE_PG
    ):
        raise _NotDirect
    return selected


def _result_processor(column: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column type's result processor on `dialect`, when known without the
    server's column type (``coltype``); else the level is not direct."""
    try:
        process: Callable[[Any], Any] | None = column.type.dialect_impl(dialect).result_processor(
            dialect, None
        )
    except Exception as exc:  # e.g. Numeric on asyncpg: depends on the server's type
        raise _NotDirect from exc
    return process
