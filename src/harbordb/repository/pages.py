"""Pages: keyset pages for feeds and APIs, numbered pages for admin screens.

`Repository.page` and `Repository.offset_page` are built from public blocks a
service can use for its own pages, over its own query or a read model:

    keys = self.sort_keys()                                   # the ordering, made total
    filters = [Film.released <= bindparam("today")]
    query = keyset_query(select(films.c.id, films.c.title), filters, keys,
                         resume=after is not None)            # build once, reuse
    return await self.keyset_page(query, keys, after=after, limit=limit, total=None,
                                  conditions=filters, params={"today": today},
                                  build=film_cards)           # rows -> read objects

`keyset_query` adds the cursor condition and the window (``LIMIT`` and
``lead() OVER``) to a statement; `keyset_page` binds the cursor's values and
the page size, runs it, and makes the next cursor from the last item. Every
value in such a query is a bind parameter, so it can be built once and kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Integer, Select, bindparam, func, true
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from harbordb.errors import InvalidInput, translating
from harbordb.inputs import BIGINT_MAX
from harbordb.pagination import (
    OffsetPage,
    Page,
    SortKey,
    Total,
    decode_cursor,
    encode_cursor,
    fingerprint,
    rows_after,
)
from harbordb.repository.base import ModelT, RepositoryBase, check_limit, table_of
from harbordb.repository.loading import NOT_DIRECT, window_direct
from harbordb.repository.ordering import Ordering
from harbordb.repository.plans import LoadPlan

RowBuilder = Callable[[Session, Sequence[Row[Any]]], Sequence[Any]]
"""Makes a page's items of its plain rows, on the (sync) session: see `PageMethods.fetch_window`.

Each row ends with the ``lead()`` column `windowed` adds. It may run more
statements on ``session.connection()`` (the children of the rows, say): they
share the page's greenlet and transaction.
"""

# Marks a query built by `keyset_query`: (resumes after a cursor?, number of keys).
_KEYSET = "harbordb_keyset"


def keyset_query(
    stmt: Select[Any],
    conditions: Sequence[ColumnElement[bool]],
    keys: Sequence[SortKey],
    *,
    resume: bool,
) -> Select[Any]:
    """`stmt` as a keyset page: filtered by `conditions`, after the cursor when `resume`,
    in `keys` order, `windowed`.

    The cursor's values (``:keyset_0``, ...) and the page size are bind
    parameters that `PageMethods.keyset_page` fills in: build the query once
    (one for the first page, one for the pages after) and run it for any page.
    `stmt` must select columns named as the keys, or the model's entity.
    """
    stmt = stmt.where(*conditions)
    if resume:
        cursor = [bindparam(f"keyset_{i}", type_=key.type) for i, key in enumerate(keys)]
        stmt = stmt.where(rows_after(keys, cursor))
    windowed_stmt = windowed(stmt, [key.ordering for key in keys])
    return windowed_stmt.execution_options(**{_KEYSET: (resume, len(keys))})


def windowed(stmt: Select[Any], ordering: Sequence[ColumnElement[Any]]) -> Select[Any]:
    """`stmt` in `ordering`, ``LIMIT :page_limit``, and whether a row follows each row.

    ``lead(true) OVER (same ORDER BY)``, the last column, says whether a next
    row exists, so a page fetches exactly its rows (and loads collections
    for them only). Run it with
    `PageMethods.fetch_window`.
    """
    follows = func.lead(true()).over(order_by=ordering)
    page_limit = bindparam("page_limit", type_=Integer)
    return stmt.add_columns(follows).order_by(*ordering).limit(page_limit)


class PageMethods(RepositoryBase[ModelT]):
    """`page`, `offset_page`, and the blocks they are made of: `keyset_page`,
    `fetch_window`, `page_total`."""

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
        keys = self.sort_keys(order_by)
        query = keyset_query(self.select_loaded(load), conditions, keys, resume=after is not None)
        return await self.keyset_page(
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
        limit = check_limit(limit, self.max_limit)
        if type(page) is not int or not 1 <= page <= BIGINT_MAX // limit:
            raise InvalidInput(
                f"page must be an int >= 1 and <= {BIGINT_MAX // limit}, got {page!r}"
            )
        conditions = self._conditions(filters, equals)
        query = windowed(self.select_loaded(load).where(*conditions), self.order_clauses(order_by))
        if page > 1:
            query = query.offset((page - 1) * limit)
        items, has_more = await self.fetch_window(query, limit)
        count = await self.page_total(total, conditions)
        return OffsetPage(tuple(items), page, limit, has_more, count)

    async def keyset_page(
        self,
        query: Select[Any],
        keys: Sequence[SortKey],
        *,
        after: str | None,
        limit: int,
        total: Total = None,
        conditions: Sequence[ColumnElement[bool]],
        params: Mapping[str, Any] | None = None,
        build: RowBuilder | None = None,
    ) -> Page[Any]:
        """The page of `query` after the cursor `after` (from the start when None).

        `query` comes from `keyset_query` with the same `keys` (from
        `sort_keys`) and ``resume=after is not None``; `conditions` are the
        filters it was built with (counted for ``total="exact"``); `params`
        binds the caller's own parameters in both. The items are the rows' ORM
        entities, or what `build` makes of the plain rows (see `fetch_window`);
        either way each item must have the keys' names as attributes, for the
        next cursor. Cursors name the model's table and the keys, so a cursor
        of `page` works here for the same ordering, and `InvalidCursor` is
        raised for one of another ordering.
        """
        resume, width = query.get_execution_options().get(_KEYSET, (None, None))
        if resume is None or width != len(keys) or resume != (after is not None):
            raise TypeError(
                "keyset_page needs a query from keyset_query(..., keys, "
                "resume=after is not None) with the same keys"
            )
        fp = fingerprint(table_of(self.model).name, keys)
        values = dict(params or {})
        if after is not None:
            cursor = decode_cursor(after, fp, keys)
            values.update((f"keyset_{i}", value) for i, value in enumerate(cursor))
        items, has_more = await self.fetch_window(query, limit, values, build=build)
        next_cursor = None
        if has_more:
            last = items[-1]
            next_cursor = encode_cursor(fp, (getattr(last, k.name) for k in keys))
        count = await self.page_total(total, conditions, params)
        return Page(tuple(items), next_cursor, has_more, count)

    async def fetch_window(
        self,
        query: Select[Any],
        limit: int,
        params: Mapping[str, Any] | None = None,
        *,
        build: RowBuilder | None = None,
    ) -> tuple[Sequence[Any], bool]:
        """The items of `limit` rows of a `windowed` query, and whether any row follows.

        `limit` is checked against `max_limit`. The items are the rows' ORM
        entities (the first column) or, given `build`, what
        ``build(session, rows)`` returns for the plain rows: read on the
        session's connection without the ORM's result processing, in one
        greenlet with whatever `build` reads next. Without `build`, a query of
        `select_loaded` that ran before runs on the driver
        (`harbordb.repository.direct`): build a query once and reuse it.
        """
        values = {**(params or {}), "page_limit": check_limit(limit, self.max_limit)}
        with translating():
            if build is None:
                found = await self.session.run_sync(window_direct, query, values)
                if found is not NOT_DIRECT:
                    return cast(tuple[Sequence[Any], bool], found)
                rows = (await self.session.execute(query, values)).unique().all()
                return [row[0] for row in rows], bool(rows) and rows[-1][-1] is not None
            return await self.session.run_sync(_built_rows, query, values, build)

    async def page_total(
        self,
        total: Total,
        conditions: Sequence[ColumnElement[bool]],
        params: Mapping[str, Any] | None = None,
    ) -> int | None:
        """A page's `total`: None, a COUNT of the model's rows matching `conditions`
        (``"exact"``, one statement), or the planner's estimate for the table
        (``"estimate"``, `estimated_rows`)."""
        if total is None:
            return None
        if total == "exact":
            return await self._count(conditions, params)
        if total == "estimate":
            return await self.estimated_rows()
        raise ValueError(f"total must be None, 'exact' or 'estimate', got {total!r}")


def _built_rows(
    session: Session, query: Select[Any], values: Mapping[str, Any], build: RowBuilder
) -> tuple[Sequence[Any], bool]:
    rows = session.connection().execute(query, values).all()
    return build(session, rows), bool(rows) and rows[-1][-1] is not None
