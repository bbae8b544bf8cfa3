"""Reads of a repository's model: by primary key, filtered lists, counts.

Filters are positional SQLAlchemy boolean expressions, AND-ed, plus
``name=value`` keyword equality on mapped columns and hybrid properties
(``None`` means IS NULL). Keyword filters cannot name a column that shares a
name with a method parameter (``load``, ``limit``, ...): use an expression.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, or_, select, true, tuple_

from harbordb.errors import ConfigurationError, NotFound, translating
from harbordb.repository.base import (
    ModelT,
    RepositoryBase,
    by_pk_select,
    check_limit,
    mapper_of,
)
from harbordb.repository.filters import any_of, contains
from harbordb.repository.loading import NOT_DIRECT, get_direct
from harbordb.repository.ordering import Ordering
from harbordb.repository.plans import LoadPlan


class ReadMethods(RepositoryBase[ModelT]):
    """`get`, `get_or_none`, `get_many`, `list`, `count`, `exists` and `matching`."""

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
        """The row with primary key `id`, or None.

        Without locks, a plan whose levels qualify runs on the driver and builds
        its objects from the rows (`harbordb.repository.direct`): one statement
        with the collections nested when they all qualify
        (`harbordb.repository.nested`), else one plus one per loaded collection.
        """
        params = self._pk_params(id)
        mapper, plan = mapper_of(self.model), self._compiled(load)
        with translating():
            if not (for_update or skip_locked):
                found = await self.session.run_sync(get_direct, mapper, plan, params)
                if found is not NOT_DIRECT:
                    return cast(ModelT | None, found)
            stmt = by_pk_select(mapper, plan, for_update, skip_locked)
            return (await self.session.scalars(stmt, params)).unique().one_or_none()

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
        pk_columns = mapper_of(self.model).primary_key
        if len(pk_columns) == 1:
            condition = any_of(pk_columns[0], wanted)
        else:
            condition = tuple_(*pk_columns).in_([tuple(i) for i in wanted])
        stmt = self.select_loaded(load).where(condition)
        with translating():
            found = (await self.session.scalars(stmt)).unique()
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
        stmt = self.select_loaded(load).where(*self._conditions(filters, equals))
        stmt = stmt.order_by(*self.order_clauses(order_by))
        if limit is not None:
            stmt = stmt.limit(check_limit(limit, None))
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

    def _locked(self, stmt: Select[Any], for_update: bool, skip_locked: bool) -> Select[Any]:
        if for_update or skip_locked:
            return stmt.with_for_update(of=self.model, skip_locked=skip_locked)
        return stmt

    def _identity(self, row: ModelT) -> Any:
        identity = mapper_of(self.model).primary_key_from_instance(row)
        return identity[0] if len(identity) == 1 else tuple(identity)


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
