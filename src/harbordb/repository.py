"""`Repository[ModelT]`: reads and writes of one model, with no lazy loads.

A repository is configured by class attributes and works through the
`AsyncSession` it is given. It flushes but never commits: the unit of work
owns the transaction.

    class OrderRepository(Repository[Order]):
        model = Order
        load = ("customer", "items.variant.product")
        order_by = ("-created_at",)

Load plans
    `load` names relationship paths. Each step becomes `selectinload` for a
    collection and `joinedload` for a many-to-one, nested as the path says,
    and every SELECT also carries `raiseload("*")` at every level: whatever
    the plan does not name raises on access instead of querying. Paths are
    checked when the class is defined; a ready-made loader option may be
    given instead of a path.

Orderings
    `"name"` (ascending), `"-name"` (descending), a mapped attribute, or its
    `.asc()` / `.desc()`. The primary key is always appended as the
    tie-breaker, so every ordering is total. `list` also takes any SQL
    expression; keyset `page` needs NOT NULL mapped columns.

Filters
    Positional SQLAlchemy boolean expressions, AND-ed, plus ``name=value``
    keyword equality on mapped columns and hybrid properties (``None`` means
    IS NULL). Values are always bound parameters; `contains` and
    `Repository.matching` escape LIKE wildcards in user text. Keyword filters
    cannot name a column that shares a name with a method parameter
    (``load``, ``limit``, ...): use an expression for those.

Errors
    Database errors surface as `harbordb.errors` exceptions (`Conflict`,
    `ForeignKeyViolation`, ...), chained to the driver's. After one,
    PostgreSQL has aborted the transaction; recover with a savepoint.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    UnaryExpression,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy import delete as delete_stmt
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import update as update_stmt
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import (
    ColumnProperty,
    Mapper,
    QueryableAttribute,
    RelationshipProperty,
    Session,
    joinedload,
    raiseload,
    selectinload,
)
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.sql.base import ExecutableOption
from sqlalchemy.sql.operators import desc_op
from sqlalchemy.sql.schema import (
    Column,
    Index,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
)

from harbordb.errors import ConfigurationError, NotFound, translating
from harbordb.pagination import (
    OffsetPage,
    Page,
    SortKey,
    Total,
    check_sortable,
    decode_cursor,
    encode_cursor,
    fingerprint,
    rows_after,
)

ModelT = TypeVar("ModelT")

LoadPlan = Sequence[str | ExecutableOption]
"""Relationship paths such as ``"items.variant.product"``, or loader options."""

Ordering = Sequence[str | ColumnElement[Any] | QueryableAttribute[Any]]
"""``"name"``, ``"-name"``, ``Model.name``, ``Model.name.desc()`` (any expression for `list`)."""

RowBuilder = Callable[[Session, Sequence[Row[Any]]], Sequence[Any]]
"""Makes a page's items of its plain rows, on the (sync) session: see `Repository._window`."""


def contains(
    column: ColumnElement[str] | QueryableAttribute[str], text: str
) -> ColumnElement[bool]:
    """Case-insensitive substring match on user text: ``%``, ``_`` and ``\\`` match literally."""
    return column.ilike(f"%{escape_like(text)}%", escape="\\")


def any_of(
    column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """``column = ANY(:values)`` with one array parameter (faster than an expanding IN)."""
    expression = column.__clause_element__() if isinstance(column, QueryableAttribute) else column
    array = bindparam(None, builtins.list(values), type_=ARRAY(expression.type))
    condition: ColumnElement[bool] = expression == any_(array)
    return condition


def escape_like(text: str) -> str:
    """`text` with LIKE's wildcards and its escape character escaped (escape is ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Repository(Generic[ModelT]):
    """Reads and writes of one mapped model through one `AsyncSession`.

    Subclasses set `model` and may override the other class attributes; every
    method also takes per-call overrides. Methods flush, never commit.
    """

    model: type[ModelT]
    """The mapped class. A subclass without one is abstract (no checks run)."""

    load: ClassVar[LoadPlan] = ()
    """Default load plan for reads (``load=`` per call replaces it; ``()`` loads nothing)."""

    order_by: ClassVar[Ordering] = ()
    """Default ordering for `list` and pages; the primary key when empty, and always last."""

    upsert_on: ClassVar[Sequence[str]] = ()
    """Conflict target of `upsert`: columns of a unique constraint (checked at definition)."""

    search_columns: ClassVar[Sequence[str]] = ()
    """String columns `matching(text)` searches (checked at definition)."""

    max_limit: ClassVar[int] = 500
    """Largest page size; 500 keeps every `selectinload` to a single IN statement."""

    _plan: ClassVar[tuple[ExecutableOption, ...]]
    _ordering: ClassVar[tuple[_Sort, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = getattr(cls, "model", None)
        if model is None:
            return
        mapper = sa_inspect(model, raiseerr=False)
        if not isinstance(mapper, Mapper):
            raise ConfigurationError(f"{cls.__name__}.model must be a mapped class, got {model!r}")
        owner = cls.__name__
        cls._plan = _compile_plan(mapper, tuple(cls.load), f"{owner}.load")
        cls._ordering = _parse_ordering(mapper, tuple(cls.order_by), f"{owner}.order_by")
        if cls.upsert_on:
            _check_conflict_target(mapper, tuple(cls.upsert_on), f"{owner}.upsert_on")
        for name in cls.search_columns:
            prop = mapper.column_attrs.get(name)
            if prop is None or not _is_string(prop):
                raise ConfigurationError(
                    f"{owner}.search_columns: {name!r} is not a string column of {model.__name__}"
                )

    def __init__(self, session: AsyncSession) -> None:
        if getattr(type(self), "model", None) is None:
            raise TypeError(f"{type(self).__name__} has no model: it is an abstract repository")
        self.session = session

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session!r})"

    # -- reads ------------------------------------------------------------

    async def get(
        self,
        id: Any,
        /,
        *,
        load: LoadPlan | None = None,
        for_update: bool = False,
        skip_locked: bool = False,
    ) -> ModelT:
        """The row with primary key `id`, or `NotFound`."""
        found = await self.get_or_none(
            id, load=load, for_update=for_update, skip_locked=skip_locked
        )
        if found is None:
            raise NotFound(f"{self.model.__name__} {id!r} not found")
        return found

    async def get_or_none(
        self,
        id: Any,
        /,
        *,
        load: LoadPlan | None = None,
        for_update: bool = False,
        skip_locked: bool = False,
    ) -> ModelT | None:
        """The row with primary key `id`, or None. One statement plus one per loaded collection."""
        stmt = self._select(load).where(self._pk_equals(id))
        stmt = self._locked(stmt, for_update, skip_locked)
        with translating():
            return (await self.session.scalars(stmt)).unique().one_or_none()

    async def get_many(
        self, ids: Iterable[Any], /, *, load: LoadPlan | None = None
    ) -> builtins.list[ModelT]:
        """The rows with these primary keys, in the order of `ids`; missing ids are left out.

        One statement, ``pk = ANY(:ids)`` with one array parameter (no
        statement at all for no ids). Repeated ids give one row.
        """
        wanted = builtins.list(dict.fromkeys(ids))
        if not wanted:
            return []
        pk_columns = _mapper(self.model).primary_key
        if len(pk_columns) == 1:
            condition = any_of(pk_columns[0], wanted)
        else:
            condition = tuple_(*pk_columns).in_([tuple(i) for i in wanted])
        with translating():
            found = (await self.session.scalars(self._select(load).where(condition))).unique()
            by_id = {self._identity(row): row for row in found}
        return [by_id[key] for key in map(_key, wanted) if key in by_id]

    async def list(
        self,
        *filters: ColumnElement[bool],
        order_by: Ordering | None = None,
        limit: int | None = None,
        load: LoadPlan | None = None,
        for_update: bool = False,
        skip_locked: bool = False,
        **equals: Any,
    ) -> builtins.list[ModelT]:
        """Rows matching the filters, ordered; all of them unless `limit` is given.

        One statement plus one per loaded collection, whatever the number of rows
        (up to 500 rows per collection statement).
        """
        stmt = self._select(load).where(*self._conditions(filters, equals))
        stmt = stmt.order_by(*self._order_clauses(order_by))
        if limit is not None:
            stmt = stmt.limit(_check_limit(limit, None))
        stmt = self._locked(stmt, for_update, skip_locked)
        with translating():
            return builtins.list((await self.session.scalars(stmt)).unique())

    async def count(self, *filters: ColumnElement[bool], **equals: Any) -> int:
        """COUNT of the rows matching the filters. One statement."""
        return await self._count(self._conditions(filters, equals))

    async def exists(self, *filters: ColumnElement[bool], **equals: Any) -> bool:
        """Whether any row matches: ``SELECT EXISTS (...)``, which stops at the first row."""
        inner = select(true()).select_from(self.model).where(*self._conditions(filters, equals))
        with translating():
            return bool((await self.session.scalars(select(inner.exists()))).one())

    def matching(self, text: str) -> ColumnElement[bool]:
        """A filter: any `search_columns` contains `text` (ignoring case, wildcards escaped)."""
        if not self.search_columns:
            raise ConfigurationError(f"{type(self).__name__} declares no search_columns")
        return or_(*(contains(getattr(self.model, name), text) for name in self.search_columns))

    # -- pages ------------------------------------------------------------

    async def page(
        self,
        *filters: ColumnElement[bool],
        after: str | None = None,
        limit: int = 50,
        order_by: Ordering | None = None,
        total: Total = None,
        load: LoadPlan | None = None,
        **equals: Any,
    ) -> Page[ModelT]:
        """The `limit` rows after the cursor `after` (from the start when None).

        One statement (``lead() OVER`` tells whether more rows follow) plus one
        per loaded collection, plus one when a `total` is asked for. A cursor
        that is garbled, tampered with or made for another ordering raises
        `InvalidCursor`.
        """
        conditions = self._conditions(filters, equals)
        keys = self._sort_keys(order_by)
        query = self._keyset_query(self._select(load), conditions, keys, resume=after is not None)
        return await self._keyset_page(
            query, keys, after=after, limit=limit, total=total, conditions=conditions
        )

    async def offset_page(
        self,
        *filters: ColumnElement[bool],
        page: int = 1,
        limit: int = 50,
        order_by: Ordering | None = None,
        total: Total = "exact",
        load: LoadPlan | None = None,
        **equals: Any,
    ) -> OffsetPage[ModelT]:
        """Page number `page` (1-based) of `limit` rows, for admin screens.

        OFFSET reads and discards the rows before the page, so deep pages get
        slower; use `page` for feeds and APIs. An exact total by default.
        """
        if type(page) is not int or page < 1:
            raise ValueError(f"page must be an int >= 1, got {page!r}")
        limit = _check_limit(limit, self.max_limit)
        conditions = self._conditions(filters, equals)
        query = self._windowed(self._select(load).where(*conditions), self._order_clauses(order_by))
        if page > 1:
            query = query.offset((page - 1) * limit)
        items, has_more = await self._window(query, limit)
        count = await self._total(total, conditions)
        return OffsetPage(tuple(items), page, limit, has_more, count)

    # -- writes -----------------------------------------------------------

    async def add(self, entity: ModelT) -> ModelT:
        """Insert `entity` (and whatever it cascades to); server defaults come back.

        One INSERT ... RETURNING per table written.
        """
        self._check_entity(entity)
        self.session.add(entity)
        with translating():
            await self.session.flush()
        return entity

    async def add_many(self, entities: Iterable[ModelT]) -> builtins.list[ModelT]:
        """Insert many rows: one multi-row INSERT ... RETURNING per 1,000 rows (insertmanyvalues).

        Rows setting different sets of columns are batched separately.
        """
        batch = builtins.list(entities)
        for entity in batch:
            self._check_entity(entity)
        self.session.add_all(batch)
        with translating():
            await self.session.flush()
        return batch

    async def update(self, id: Any, /, **values: Any) -> ModelT:
        """Set columns of the row `id`: one ``UPDATE ... RETURNING``; `NotFound` if no row.

        Values may be SQL expressions (``stock_qty=Variant.stock_qty - 1``).
        The returned object, and any copy already in the session, is refreshed.
        """
        if not values:
            raise TypeError(f"{type(self).__name__}.update() needs at least one column to set")
        self._check_columns(values, "update")
        stmt = (
            update_stmt(self.model)
            .where(self._pk_equals(id))
            .values(**values)
            .returning(self.model)
        )
        with translating():
            result = await self.session.execute(stmt, execution_options={"populate_existing": True})
            updated = result.scalars().one_or_none()
        if updated is None:
            raise NotFound(f"{self.model.__name__} {id!r} not found")
        return updated

    async def delete(self, id: Any, /) -> None:
        """Delete the row `id`: one ``DELETE ... RETURNING``; `NotFound` if no row."""
        pk = _mapper(self.model).primary_key
        stmt = delete_stmt(self.model).where(self._pk_equals(id)).returning(*pk)
        with translating():
            deleted = (await self.session.execute(stmt)).first()
        if deleted is None:
            raise NotFound(f"{self.model.__name__} {id!r} not found")

    async def update_where(
        self, *filters: ColumnElement[bool], values: Mapping[str, Any], **equals: Any
    ) -> int:
        """Set `values` on every matching row: one UPDATE; returns how many rows changed.

        At least one filter is required (pass ``true()`` to mean every row).
        Objects already in the session take plain values at once; a column set
        to a SQL expression is expired on them (read it again with `get`).
        """
        conditions = self._required_conditions(filters, equals, "update_where")
        if not values:
            raise TypeError(f"{type(self).__name__}.update_where() needs values to set")
        self._check_columns(values, "update")
        stmt = update_stmt(self.model).where(*conditions).values(**values)
        with translating():
            result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0))

    async def delete_where(self, *filters: ColumnElement[bool], **equals: Any) -> int:
        """Delete every matching row: one DELETE; returns how many rows went.

        At least one filter is required (pass ``true()`` to mean every row).
        """
        conditions = self._required_conditions(filters, equals, "delete_where")
        stmt = delete_stmt(self.model).where(*conditions)
        with translating():
            result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0))

    async def upsert(
        self,
        values: Mapping[str, Any],
        *,
        on: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
    ) -> ModelT:
        """Insert, or update the row that has the same `on` key: one statement, race-free.

        ``INSERT ... ON CONFLICT (on) DO UPDATE SET ... RETURNING``. `update`
        names the columns to overwrite (default: every given column outside
        the key); ``update=()`` keeps the existing row as it is (insert-or-get).
        """
        (row,) = await self.upsert_many([values], on=on, update=update)
        return row

    async def upsert_many(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        on: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
    ) -> builtins.list[ModelT]:
        """`upsert` for many rows in one statement (per 1,000 rows), returned in input order.

        Every row must set the same columns, and no two rows may share a key
        (PostgreSQL cannot update one row twice in one statement). Rows are
        sent sorted by key, so concurrent batches over the same keys take row
        locks in the same order and cannot deadlock each other.
        """
        if not rows:
            return []
        target = tuple(on) if on is not None else tuple(self.upsert_on)
        if not target:
            raise ConfigurationError(
                f"{type(self).__name__} declares no upsert_on: pass on=(...column names)"
            )
        if on is not None:
            _check_conflict_target(_mapper(self.model), target, f"{type(self).__name__}.upsert")
        columns = set(rows[0])
        self._check_columns(columns, "upsert")
        missing = [name for name in target if name not in columns]
        if missing:
            raise ValueError(f"upsert rows must set the conflict key column(s) {missing}")
        seen: dict[tuple[Any, ...], int] = {}
        for position, row in enumerate(rows):
            if set(row) != columns:
                raise ValueError(f"upsert row {position} sets different columns than row 0")
            key = tuple(row[name] for name in target)
            if key in seen:
                raise ValueError(
                    f"upsert rows {seen[key]} and {position} have the same {', '.join(target)}"
                )
            seen[key] = position
        overwrite = (
            [c for c in columns if c not in target] if update is None else builtins.list(update)
        )
        self._check_columns(overwrite, "upsert update")
        stmt = pg_insert(self.model)
        # DO NOTHING returns no row for an existing key; a no-op SET returns it.
        assignments = {name: stmt.excluded[name] for name in overwrite} or {
            target[0]: stmt.excluded[target[0]]
        }
        stmt = stmt.on_conflict_do_update(index_elements=target, set_=assignments)
        with translating():
            result = await self.session.scalars(
                stmt.returning(self.model),
                [dict(row) for row in _in_key_order(rows, seen)],
                execution_options={"populate_existing": True},
            )
            returned = builtins.list(result)
        by_key = {tuple(getattr(obj, name) for name in target): obj for obj in returned}
        if all(key in by_key for key in seen):
            return [by_key[key] for key in seen]
        return returned  # pragma: no cover - a key the database normalised (e.g. citext)

    async def copy(
        self,
        records: Iterable[Sequence[Any]] | AsyncIterable[Sequence[Any]],
        *,
        columns: Sequence[str],
    ) -> int:
        """Bulk-load rows with ``COPY ... FROM STDIN`` (asyncpg's binary copy); returns the count.

        Runs on the session's own connection, inside its transaction (pending
        objects are flushed first). Each record holds values in `columns`
        order. The ORM does not see copied rows: nothing is returned or
        added to the session.
        """
        mapper = _mapper(self.model)
        self._check_columns(columns, "copy")
        table = _table(self.model)
        names = [mapper.column_attrs[name].columns[0].name for name in columns]
        with translating():
            await self.session.flush()
            connection = await self.session.connection()
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            if driver is None:  # pragma: no cover - a pooled connection always has one
                raise RuntimeError("the session's connection has no driver connection")
            if not driver.is_in_transaction():
                # The asyncpg adapter begins lazily: make it begin so COPY joins the transaction.
                await connection.exec_driver_sql("SELECT 1")
            status = await driver.copy_records_to_table(
                table.name, records=records, columns=names, schema_name=table.schema
            )
        return int(status.split()[-1])

    # -- building blocks --------------------------------------------------

    def _select(self, load: LoadPlan | None) -> Select[ModelT]:
        return select(self.model).options(*self._options(load))

    def _options(self, load: LoadPlan | None) -> tuple[ExecutableOption, ...]:
        if load is None:
            return self._plan
        return _compile_plan(_mapper(self.model), tuple(load), f"{type(self).__name__} load=")

    def _locked(self, stmt: Select[Any], for_update: bool, skip_locked: bool) -> Select[Any]:
        if for_update or skip_locked:
            return stmt.with_for_update(of=self.model, skip_locked=skip_locked)
        return stmt

    def _pk_equals(self, id: Any) -> ColumnElement[bool]:
        pk = _mapper(self.model).primary_key
        if len(pk) == 1:
            condition: ColumnElement[bool] = pk[0] == id
            return condition
        if not isinstance(id, tuple) or len(id) != len(pk):
            raise TypeError(
                f"{self.model.__name__} has a composite primary key: pass a tuple of {len(pk)}"
            )
        return tuple_(*pk) == tuple_(*id)

    def _identity(self, row: ModelT) -> Any:
        identity = _mapper(self.model).primary_key_from_instance(row)
        return identity[0] if len(identity) == 1 else tuple(identity)

    def _conditions(
        self, filters: Sequence[ColumnElement[bool]], equals: Mapping[str, Any]
    ) -> builtins.list[ColumnElement[bool]]:
        conditions = builtins.list(filters)
        for name, value in equals.items():
            conditions.append(self._filterable(name) == value)
        return conditions

    def _required_conditions(
        self, filters: Sequence[ColumnElement[bool]], equals: Mapping[str, Any], method: str
    ) -> builtins.list[ColumnElement[bool]]:
        conditions = self._conditions(filters, equals)
        if not conditions:
            raise TypeError(
                f"{type(self).__name__}.{method}() needs a filter (pass true() for every row)"
            )
        return conditions

    def _filterable(self, name: str) -> Any:
        mapper = _mapper(self.model)
        if name in mapper.column_attrs:
            return getattr(self.model, name)
        descriptor = mapper.all_orm_descriptors.get(name)
        if isinstance(descriptor, hybrid_property):
            return getattr(self.model, name)
        if name in mapper.relationships:
            raise TypeError(
                f"cannot filter {self.model.__name__} on relationship {name!r} by equality: "
                "filter on its foreign key column or pass an expression"
            )
        raise TypeError(
            f"{self.model.__name__} has no column {name!r} to filter on "
            f"(columns: {', '.join(mapper.column_attrs.keys())})"
        )

    def _check_columns(self, names: Iterable[str], action: str) -> None:
        mapper = _mapper(self.model)
        unknown = [name for name in names if name not in mapper.column_attrs]
        if unknown:
            raise TypeError(
                f"{self.model.__name__} has no column(s) {', '.join(map(repr, unknown))} "
                f"to {action} (columns: {', '.join(mapper.column_attrs.keys())})"
            )

    def _check_entity(self, entity: object) -> None:
        if not isinstance(entity, self.model):
            raise TypeError(
                f"{type(self).__name__} stores {self.model.__name__} objects, "
                f"not {type(entity).__name__}"
            )

    def _resolved_ordering(self, order_by: Ordering | None) -> tuple[_Sort, ...]:
        if order_by is None:
            return self._ordering
        return _parse_ordering(_mapper(self.model), tuple(order_by), "order_by")

    def _order_clauses(self, order_by: Ordering | None) -> builtins.list[ColumnElement[Any]]:
        sorts = self._resolved_ordering(order_by)
        clauses = [s.key.ordering if s.key is not None else s.expression for s in sorts]
        named = {s.key.name for s in sorts if s.key is not None}
        descending = bool(sorts) and sorts[-1].key is not None and sorts[-1].key.descending
        for key in _pk_keys(_mapper(self.model), descending):
            if key.name not in named:
                clauses.append(key.ordering)
        return clauses

    def _sort_keys(self, order_by: Ordering | None) -> builtins.list[SortKey]:
        """The keyset ordering: the caller's keys, then the primary key (last key's direction)."""
        keys: builtins.list[SortKey] = []
        for sort in self._resolved_ordering(order_by):
            if sort.key is None:
                raise TypeError(
                    "keyset pagination orders by mapped columns only, "
                    f"not by the expression {sort.expression}"
                )
            if sort.nullable:
                raise TypeError(
                    f"keyset pagination needs NOT NULL sort columns; "
                    f"{self.model.__name__}.{sort.key.name} is nullable"
                )
            check_sortable(sort.key)
            keys.append(sort.key)
        named = {k.name for k in keys}
        descending = bool(keys) and keys[-1].descending
        keys += [k for k in _pk_keys(_mapper(self.model), descending) if k.name not in named]
        return keys

    def _keyset_query(
        self,
        stmt: Select[Any],
        conditions: Sequence[ColumnElement[bool]],
        keys: Sequence[SortKey],
        *,
        resume: bool,
    ) -> Select[Any]:
        """`stmt` as a keyset page: `conditions`, the rows after the cursor (when
        `resume`), in `keys` order, windowed (`_windowed`).

        The cursor's values (``:keyset_0``, ...) and the page size are bind
        parameters that `_keyset_page` fills in: a query can be built once and
        run for any page (`ProductRepository.catalog_cards` keeps its queries).
        """
        stmt = stmt.where(*conditions)
        if resume:
            cursor = [bindparam(f"keyset_{i}", type_=key.type) for i, key in enumerate(keys)]
            stmt = stmt.where(rows_after(keys, cursor))
        return self._windowed(stmt, [key.ordering for key in keys])

    async def _keyset_page(
        self,
        query: Select[Any],
        keys: Sequence[SortKey],
        *,
        after: str | None,
        limit: int,
        total: Total,
        conditions: Sequence[ColumnElement[bool]],
        params: Mapping[str, Any] | None = None,
        build: RowBuilder | None = None,
    ) -> Page[Any]:
        """The page of `query` (from `_keyset_query`, resuming when `after` is set).

        `params` binds the caller's own parameters in `query` and `conditions`.
        The items are ORM entities, or what `build` makes of the rows (see
        `_window`); either way each item has the sort keys as attributes, for
        the next cursor.
        """
        fp = fingerprint(_table(self.model).name, keys)
        values = dict(params or {})
        if after is not None:
            cursor = decode_cursor(after, fp, keys)
            values.update((f"keyset_{i}", value) for i, value in enumerate(cursor))
        items, has_more = await self._window(query, limit, values, build=build)
        next_cursor = None
        if has_more:
            last = items[-1]
            next_cursor = encode_cursor(fp, (getattr(last, k.name) for k in keys))
        count = await self._total(total, conditions, params)
        return Page(tuple(items), next_cursor, has_more, count)

    @staticmethod
    def _windowed(stmt: Select[Any], ordering: Sequence[ColumnElement[Any]]) -> Select[Any]:
        """`stmt` in `ordering`, ``LIMIT :page_limit``, and whether a row follows each row.

        ``lead(true) OVER (same ORDER BY)``, the last column, says whether a
        next row exists, so a page fetches exactly its rows: one more would push
        a 500-row page's `selectinload` into a second IN statement.
        """
        follows = func.lead(true()).over(order_by=ordering)
        page_limit = bindparam("page_limit", type_=Integer)
        return stmt.add_columns(follows).order_by(*ordering).limit(page_limit)

    async def _window(
        self,
        query: Select[Any],
        limit: int,
        params: Mapping[str, Any] | None = None,
        *,
        build: RowBuilder | None = None,
    ) -> tuple[Sequence[Any], bool]:
        """The items of `limit` rows of a `_windowed` query, and whether any row follows.

        The items are the rows' ORM entities or, given `build`, what
        ``build(session, rows)`` returns for the plain rows (the ``lead()``
        value last in each): read on the session's connection without the ORM's
        result processing, in one greenlet with whatever `build` reads next.
        """
        values = {**(params or {}), "page_limit": _check_limit(limit, self.max_limit)}
        with translating():
            if build is None:
                rows = (await self.session.execute(query, values)).unique().all()
                return [row[0] for row in rows], bool(rows) and rows[-1][-1] is not None
            return await self.session.run_sync(_built_rows, query, values, build)

    async def _total(
        self,
        total: Total,
        conditions: Sequence[ColumnElement[bool]],
        params: Mapping[str, Any] | None = None,
    ) -> int | None:
        if total is None:
            return None
        if total == "exact":
            return await self._count(conditions, params)
        if total == "estimate":
            return await self.estimated_rows()
        raise ValueError(f"total must be None, 'exact' or 'estimate', got {total!r}")

    async def _count(
        self, conditions: Sequence[ColumnElement[bool]], params: Mapping[str, Any] | None = None
    ) -> int:
        stmt = select(func.count()).select_from(self.model).where(*conditions)
        with translating():
            return int((await self.session.scalars(stmt, params)).one())

    async def estimated_rows(self) -> int | None:
        """The planner's row count for the whole table (``pg_class.reltuples``), unfiltered.

        None until the table was first analyzed. One statement, no table scan.
        """
        table = _table(self.model)
        name = f"{table.schema}.{table.name}" if table.schema else table.name
        stmt = text("SELECT reltuples FROM pg_catalog.pg_class WHERE oid = to_regclass(:name)")
        with translating():
            value = (await self.session.execute(stmt, {"name": _quoted(name)})).scalar()
        return None if value is None or value < 0 else round(value)


# -- module helpers -----------------------------------------------------------


def _built_rows(
    session: Session, query: Select[Any], values: Mapping[str, Any], build: RowBuilder
) -> tuple[Sequence[Any], bool]:
    rows = session.connection().execute(query, values).all()
    return build(session, rows), bool(rows) and rows[-1][-1] is not None


@dataclass(frozen=True)
class _Sort:
    """One parsed ORDER BY item: a mapped-column key, or any expression (`list` only)."""

    key: SortKey | None
    expression: ColumnElement[Any]
    nullable: bool = False


def _mapper(model: type[Any]) -> Mapper[Any]:
    return sa_inspect(model)  # type: ignore[no-any-return]


def _in_key_order(
    rows: Sequence[Mapping[str, Any]], positions: Mapping[tuple[Any, ...], int]
) -> builtins.list[Mapping[str, Any]]:
    """Rows sorted by conflict key, so concurrent batches lock rows in one order (no deadlock)."""
    try:
        return [rows[positions[key]] for key in sorted(positions)]
    except TypeError:  # keys that do not compare: keep the caller's order
        return builtins.list(rows)


def _table(model: type[Any]) -> Table:
    table = _mapper(model).local_table
    if not isinstance(table, Table):  # pragma: no cover - harbordb models map tables
        raise ConfigurationError(f"{model.__name__} is not mapped to a table")
    return table


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _quoted(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _check_limit(limit: object, maximum: int | None) -> int:
    if type(limit) is not int or limit < 1 or (maximum is not None and limit > maximum):
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"limit must be an int >= 1{bound}, got {limit!r}")
    return limit


def _is_string(prop: ColumnProperty[Any]) -> bool:
    return isinstance(prop.columns[0].type, String)


def _pk_keys(mapper: Mapper[Any], descending: bool) -> builtins.list[SortKey]:
    keys = []
    for column in mapper.primary_key:
        prop = mapper.get_property_by_column(column)
        keys.append(SortKey(prop.key, getattr(mapper.class_, prop.key), column.type, descending))
    return keys


def _parse_ordering(
    mapper: Mapper[Any], ordering: tuple[Any, ...], owner: str
) -> tuple[_Sort, ...]:
    sorts = []
    for item in ordering:
        descending = False
        target = item
        if isinstance(item, str):
            descending = item.startswith("-")
            name = item.lstrip("-+")
            if name not in mapper.column_attrs:
                raise ConfigurationError(
                    f"{owner}: {mapper.class_.__name__} has no column {name!r} to order by"
                )
            target = getattr(mapper.class_, name)
        elif isinstance(item, UnaryExpression) and item.modifier is not None:
            descending = item.modifier is desc_op
            target = item.element
        elif not isinstance(item, ColumnElement | QueryableAttribute):
            raise ConfigurationError(f"{owner}: cannot order by {item!r}")
        sorts.append(_sort_for(mapper, target, descending, item))
    return tuple(sorts)


def _sort_for(mapper: Mapper[Any], target: Any, descending: bool, item: Any) -> _Sort:
    expression = target.__clause_element__() if hasattr(target, "__clause_element__") else target
    column = expression if isinstance(expression, Column) or hasattr(expression, "table") else None
    prop = None
    if column is not None:
        try:
            prop = mapper.get_property_by_column(column)
        except UnmappedColumnError:  # another table's column: an expression here
            prop = None
    if isinstance(prop, ColumnProperty) and isinstance(prop.columns[0], Column):
        table_column = prop.columns[0]
        key = SortKey(prop.key, getattr(mapper.class_, prop.key), table_column.type, descending)
        return _Sort(key, key.ordering, nullable=bool(table_column.nullable))
    if isinstance(item, str):  # pragma: no cover - strings always name a column property
        raise ConfigurationError(f"cannot order by {item!r}")
    return _Sort(None, item if isinstance(item, ColumnElement) else expression)


@lru_cache(maxsize=256)
def _compile_plan(
    mapper: Mapper[Any], plan: tuple[str | ExecutableOption, ...], owner: str
) -> tuple[ExecutableOption, ...]:
    """Loader options for `plan`, always led by ``raiseload("*")``.

    Paths sharing a prefix share one loader: ``("items", "items.variant")``
    loads `items` once.
    """
    tree: dict[RelationshipProperty[Any], dict[Any, Any]] = {}
    extra: builtins.list[ExecutableOption] = []
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
    nested: builtins.list[Any] = [_loader(rel, grand) for rel, grand in children.items()]
    return strategy(attribute).options(*nested, raiseload("*"))


def _check_conflict_target(mapper: Mapper[Any], target: tuple[str, ...], owner: str) -> None:
    """`target` must be exactly the columns of a primary key, unique constraint or unique index."""
    unknown = [name for name in target if name not in mapper.column_attrs]
    if unknown:
        raise ConfigurationError(
            f"{owner}: {mapper.class_.__name__} has no column(s) {', '.join(map(repr, unknown))}"
        )
    wanted = {mapper.column_attrs[name].columns[0].name for name in target}
    table = _table(mapper.class_)
    candidates = [
        {column.name for column in constraint.columns}
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint)
    ]
    candidates += [
        {column.name for column in index.columns}
        for index in getattr(table, "indexes", ())
        if isinstance(index, Index) and index.unique
    ]
    if wanted not in candidates:
        raise ConfigurationError(
            f"{owner}: no unique constraint on ({', '.join(target)}) of "
            f"{mapper.class_.__name__}, so ON CONFLICT cannot target it"
        )
