"""`RepositoryBase`: what every repository method stands on.

The configuration (class attributes, checked when a subclass is defined),
the session, and the public building blocks a service's own methods use next
to the built-in ones: `select_loaded` (a SELECT carrying the load plan),
`sort_keys` and `order_clauses` (the ordering, made total). `Repository`
(`harbordb.repository`) adds the reads, pages and writes to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    bindparam,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import ColumnProperty, Mapper
from sqlalchemy.sql.schema import Index, PrimaryKeyConstraint, Table, UniqueConstraint

from harbordb.errors import ConfigurationError, InvalidInput, translating
from harbordb.inputs import BIGINT_MAX
from harbordb.pagination import SortKey
from harbordb.repository import loading as _loading  # noqa: F401  (registers the plan runner)
from harbordb.repository.ordering import (
    Ordering,
    Sort,
    keyset_keys,
    order_clauses,
    parse_ordering,
)
from harbordb.repository.plans import (
    PLAN_OPTION,
    ROOT_OPTION,
    CompiledPlan,
    LoadPlan,
    compile_plan,
)

ModelT = TypeVar("ModelT")


class RepositoryBase(Generic[ModelT]):
    """One mapped model through one `AsyncSession`: configuration and building blocks.

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
    """Largest page size."""

    _plan: ClassVar[CompiledPlan]
    _ordering: ClassVar[tuple[Sort, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = getattr(cls, "model", None)
        if model is None:
            return
        mapper = sa_inspect(model, raiseerr=False)
        if not isinstance(mapper, Mapper):
            raise ConfigurationError(f"{cls.__name__}.model must be a mapped class, got {model!r}")
        owner = cls.__name__
        cls._plan = compile_plan(mapper, tuple(cls.load), f"{owner}.load")
        cls._ordering = parse_ordering(mapper, cls.order_by, f"{owner}.order_by")
        if cls.upsert_on:
            check_conflict_target(mapper, tuple(cls.upsert_on), f"{owner}.upsert_on")
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

    # -- building blocks (public) -------------------------------------------

    def select_loaded(self, load: LoadPlan | None = None) -> Select[ModelT]:
        """``select(model)`` with the load plan's options (the class's `load` when None).

        Everything the plan does not name raises on access. The statement is
        built once per plan and shared; its collections load wherever it is
        executed (`harbordb.repository.loading`).
        """
        return loaded_select(mapper_of(self.model), self._compiled(load))

    def sort_keys(self, order_by: Ordering | None = None) -> list[SortKey]:
        """The keyset ordering: `order_by` (the class's when None), then the primary key.

        The primary key takes the last key's direction. Each `SortKey` names a
        mapped attribute, which every item of a keyset page must have (the next
        cursor is read from them). `TypeError` for an expression, a nullable
        column, or a type a cursor cannot carry.
        """
        if order_by is None:
            return list(_default_keys(type(self)))
        return keyset_keys(mapper_of(self.model), self._resolved_ordering(order_by))

    def order_clauses(self, order_by: Ordering | None = None) -> list[ColumnElement[Any]]:
        """ORDER BY clauses for `order_by` (the class's when None), the primary key last.

        Unlike `sort_keys`, any SQL expression is allowed: for `list` and offset pages.
        """
        return order_clauses(mapper_of(self.model), self._resolved_ordering(order_by))

    async def estimated_rows(self) -> int | None:
        """The planner's row count for the whole table (``pg_class.reltuples``), unfiltered.

        None until the table was first analyzed. One statement, no table scan.
        """
        table = table_of(self.model)
        name = f"{table.schema}.{table.name}" if table.schema else table.name
        stmt = text(
            "SELECT reltuples FROM pg_catalog.pg_class WHERE oid = to_regclass(:name)"
        ).columns(reltuples=Float)  # a textual SELECT: a read, not a possible write
        with translating():
            value = (await self.session.execute(stmt, {"name": _quoted(name)})).scalar()
        return None if value is None or value < 0 else round(value)

    # -- internal helpers ---------------------------------------------------

    def _compiled(self, load: LoadPlan | None) -> CompiledPlan:
        if load is None:
            return self._plan
        return compile_plan(mapper_of(self.model), tuple(load), f"{type(self).__name__} load=")

    def _resolved_ordering(self, order_by: Ordering | None) -> tuple[Sort, ...]:
        if order_by is None:
            return self._ordering
        return parse_ordering(mapper_of(self.model), order_by, "order_by")

    def _pk_params(self, id: Any) -> dict[str, Any]:
        """Values for `by_pk_select`'s parameters."""
        pk = mapper_of(self.model).primary_key
        if len(pk) == 1:
            return {"harbordb_pk_0": id}
        if not isinstance(id, tuple) or len(id) != len(pk):
            raise TypeError(
                f"{self.model.__name__} has a composite primary key: pass a tuple of {len(pk)}"
            )
        return {f"harbordb_pk_{i}": value for i, value in enumerate(id)}

    def _pk_equals(self, id: Any) -> ColumnElement[bool]:
        pk = mapper_of(self.model).primary_key
        if len(pk) == 1:
            condition: ColumnElement[bool] = pk[0] == id
            return condition
        if not isinstance(id, tuple) or len(id) != len(pk):
            raise TypeError(
                f"{self.model.__name__} has a composite primary key: pass a tuple of {len(pk)}"
            )
        return tuple_(*pk) == tuple_(*id)

    def _conditions(
        self, filters: Sequence[ColumnElement[bool]], equals: Mapping[str, Any]
    ) -> list[ColumnElement[bool]]:
        conditions = list(filters)
        for name, value in equals.items():
            conditions.append(self._filterable(name) == value)
        return conditions

    def _required_conditions(
        self, filters: Sequence[ColumnElement[bool]], equals: Mapping[str, Any], method: str
    ) -> list[ColumnElement[bool]]:
        conditions = self._conditions(filters, equals)
        if not conditions:
            raise TypeError(
                f"{type(self).__name__}.{method}() needs a filter (pass true() for every row)"
            )
        return conditions

    def _filterable(self, name: str) -> Any:
        mapper = mapper_of(self.model)
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
        mapper = mapper_of(self.model)
        unknown = [name for name in names if name not in mapper.column_attrs]
        if unknown:
            raise TypeError(
                f"{self.model.__name__} has no column(s) {', '.join(map(repr, unknown))} "
                f"to {action} (columns: {', '.join(mapper.column_attrs.keys())})"
            )

    async def _count(
        self, conditions: Sequence[ColumnElement[bool]], params: Mapping[str, Any] | None = None
    ) -> int:
        stmt = select(func.count()).select_from(self.model).where(*conditions)
        with translating():
            return int((await self.session.scalars(stmt, params)).one())


_DEFAULT_KEYS: dict[type[Any], tuple[SortKey, ...]] = {}


def _default_keys(repository: type[RepositoryBase[Any]]) -> tuple[SortKey, ...]:
    """A repository class's own keyset ordering, worked out once."""
    keys = _DEFAULT_KEYS.get(repository)
    if keys is None:
        keys = tuple(keyset_keys(mapper_of(repository.model), repository._ordering))
        _DEFAULT_KEYS[repository] = keys
    return keys


@lru_cache(maxsize=512)
def loaded_select(mapper: Mapper[Any], plan: CompiledPlan) -> Select[Any]:
    """``select(model)`` carrying `plan`, built once per model and plan and shared:
    SQLAlchemy's statements are immutable, and a reused one keeps its cache key."""
    model = mapper.class_
    stmt = select(model).options(*plan.options).execution_options(**{ROOT_OPTION: (mapper, plan)})
    if plan.loads:
        stmt = stmt.execution_options(**{PLAN_OPTION: (model, plan.loads)})
    return stmt


@lru_cache(maxsize=512)
def by_pk_select(
    mapper: Mapper[Any], plan: CompiledPlan, for_update: bool, skip_locked: bool
) -> Select[Any]:
    """`loaded_select` of the row whose primary key is ``:harbordb_pk_0`` (, ``_1``...)."""
    pk = mapper.primary_key
    params = [bindparam(f"harbordb_pk_{i}", type_=column.type) for i, column in enumerate(pk)]
    condition = pk[0] == params[0] if len(pk) == 1 else tuple_(*pk) == tuple_(*params)
    stmt = loaded_select(mapper, plan).where(condition)
    if for_update or skip_locked:
        stmt = stmt.with_for_update(of=mapper.class_, skip_locked=skip_locked)
    return stmt


def mapper_of(model: type[Any]) -> Mapper[Any]:
    """The ORM mapper of a mapped class."""
    return sa_inspect(model)  # type: ignore[no-any-return]


def table_of(model: type[Any]) -> Table:
    """The table a mapped class maps."""
    table = mapper_of(model).local_table
    if not isinstance(table, Table):  # pragma: no cover - repositories map tables
        raise ConfigurationError(f"{model.__name__} is not mapped to a table")
    return table


def check_limit(limit: object, maximum: int | None) -> int:
    """`limit` if it is an int >= 1 (and <= `maximum`, else BIGINT's maximum), else
    `InvalidInput` (a ValueError), before any SQL."""
    bound = BIGINT_MAX if maximum is None else maximum
    if type(limit) is not int or not 1 <= limit <= bound:
        raise InvalidInput(f"limit must be an int >= 1 and <= {bound}, got {limit!r}")
    return limit


def check_conflict_target(mapper: Mapper[Any], target: tuple[str, ...], owner: str) -> None:
    """`target` must be exactly the columns of a primary key, unique constraint or unique index."""
    unknown = [name for name in target if name not in mapper.column_attrs]
    if unknown:
        raise ConfigurationError(
            f"{owner}: {mapper.class_.__name__} has no column(s) {', '.join(map(repr, unknown))}"
        )
    wanted = {mapper.column_attrs[name].columns[0].name for name in target}
    table = table_of(mapper.class_)
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


def _is_string(prop: ColumnProperty[Any]) -> bool:
    return isinstance(prop.columns[0].type, String)


def _quoted(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))
