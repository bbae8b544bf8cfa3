"""Writes of a repository's model: inserts, updates, deletes, upserts, COPY.

Each write is one statement (per table, or per 1,000 rows), flushed at once
so constraint errors surface where they happen; none commits. Database errors
surface as `harbordb.errors` exceptions (`Conflict`, `ForeignKeyViolation`,
...), chained to the driver's; after one, PostgreSQL has aborted the
transaction: recover with a savepoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy import delete as delete_stmt
from sqlalchemy import update as update_stmt
from sqlalchemy.dialects.postgresql import insert as pg_insert

from harbordb.errors import ConfigurationError, NotFound, translating
from harbordb.repository.base import (
    ModelT,
    RepositoryBase,
    check_conflict_target,
    mapper_of,
    table_of,
)
from harbordb.writetracking import mark_written


class WriteMethods(RepositoryBase[ModelT]):
    """`add`, `add_many`, `update`, `delete`, `update_where`, `delete_where`,
    `upsert`, `upsert_many` and `copy`."""

    async def add(self, entity: ModelT) -> ModelT:
        """Insert `entity` (and whatever it cascades to); server defaults come back.

        One INSERT ... RETURNING per table written.
        """
        self._check_entity(entity)
        self.session.add(entity)
        with translating():
            await self.session.flush()
        return entity

    async def add_many(self, entities: Iterable[ModelT]) -> list[ModelT]:
        """Insert many rows: one multi-row INSERT ... RETURNING per 1,000 rows (insertmanyvalues).

        Rows setting different sets of columns are batched separately.
        """
        batch = list(entities)
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
        pk = mapper_of(self.model).primary_key
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
    ) -> list[ModelT]:
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
            check_conflict_target(mapper_of(self.model), target, f"{type(self).__name__}.upsert")
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
        overwrite = [c for c in columns if c not in target] if update is None else list(update)
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
            returned = list(result)
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
        mapper = mapper_of(self.model)
        self._check_columns(columns, "copy")
        table = table_of(self.model)
        names = [mapper.column_attrs[name].columns[0].name for name in columns]
        with translating():
            await self.session.flush()
            connection = await self.session.connection()
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            if driver is None:  # pragma: no cover - a pooled connection always has one
                raise RuntimeError("the session's connection has no driver connection")
            mark_written(connection.info)  # the driver's COPY is not seen by SQLAlchemy
            if not driver.is_in_transaction():
                # The asyncpg adapter begins lazily: make it begin so COPY joins the transaction.
                await connection.exec_driver_sql("SELECT 1")
            status = await driver.copy_records_to_table(
                table.name, records=records, columns=names, schema_name=table.schema
            )
        return int(status.split()[-1])

    def _check_entity(self, entity: object) -> None:
        if not isinstance(entity, self.model):
            raise TypeError(
                f"{type(self).__name__} stores {self.model.__name__} objects, "
                f"not {type(entity).__name__}"
            )


def _in_key_order(
    rows: Sequence[Mapping[str, Any]], positions: Mapping[tuple[Any, ...], int]
) -> list[Mapping[str, Any]]:
    """Rows sorted by conflict key, so concurrent batches lock rows in one order (no deadlock)."""
    try:
        return [rows[positions[key]] for key in sorted(positions)]
    except TypeError:  # keys that do not compare: keep the caller's order
        return list(rows)
