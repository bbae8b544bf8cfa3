"""Projections read timestamps as the server's text while the session's DateStyle is
ISO and its TimeZone UTC (`harbordb.timestamps`), as binary otherwise: the
values must be asyncpg's own, to the time zone object, in every shape, directly
and through PgBouncer.

On a schema of this module's own (events and their notes), created for the
module and dropped after it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import BigInteger, DateTime, ForeignKey, MetaData, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from tests.integration.observing import direct_statements

from harbordb import Database, Repository
from harbordb.projection import Projection, related

SCHEMA = "projection_times"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    local: Mapped[datetime | None] = mapped_column(DateTime())
    notes: Mapped[list[Note]] = relationship(lazy="raise", order_by="Note.id")


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NoteRepository(Repository[Note]):
    model = Note


@dataclass(frozen=True, slots=True)
class NoteRow:
    id: int
    at: datetime


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    at: datetime | None
    local: datetime | None
    notes: tuple[NoteRow, ...]
    note_times: tuple[datetime, ...]


EVENTS = Projection(
    EventRow, Event, notes=Projection(NoteRow, Note), note_times=related(Event.notes, Note.at)
)
NOTES = Projection(NoteRow, Note)

# What the server holds, and what asyncpg returns for it: every form of fraction, both
# ends of Python's range, the infinities (asyncpg's naive stand-ins), NULL.
AT = [
    "2026-01-02 03:04:05.123456+00",
    "2026-01-02 03:04:05+00",
    "2026-01-02 03:04:05.5+05:30",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "infinity",
    "-infinity",
    None,
]
LOCAL = [
    "2026-01-02 03:04:05.123456",
    "1999-12-31 23:59:59.9",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59.999999",
    "-infinity",
    "infinity",
    "2026-03-29 02:30:00",
    None,
]


@pytest.fixture(scope="module")
async def _events(database: Database) -> AsyncIterator[None]:
    async with database.engine.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await connection.run_sync(Base.metadata.create_all)
        for i, (at, local) in enumerate(zip(AT, LOCAL, strict=True), start=1):
            await connection.execute(
                text(
                    f"INSERT INTO {SCHEMA}.events VALUES (:i, "
                    "CAST(CAST(:at AS text) AS timestamptz), "
                    "CAST(CAST(:local AS text) AS timestamp))"
                ),
                {"i": i, "at": at, "local": local},
            )  # as text, cast by the server (the infinities too)
            for n, note_at in enumerate((at or "epoch", "2026-06-01 12:00:00.000001+00")):
                await connection.execute(
                    text(
                        f"INSERT INTO {SCHEMA}.notes VALUES "
                        "(:n, :i, CAST(CAST(:at AS text) AS timestamptz))"
                    ),
                    {"n": i * 10 + n, "i": i, "at": note_at},
                )
    yield
    async with database.engine.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA {SCHEMA} CASCADE"))


pytestmark = pytest.mark.usefixtures("_events")


async def _raw(uow: Any) -> Any:
    """The unit of work's asyncpg connection: binary values, decoded by asyncpg."""
    connection = await uow.session.connection()
    return (await connection.get_raw_connection()).driver_connection


async def _expected(uow: Any) -> list[EventRow]:
    """The events as asyncpg decodes their binary values, whatever the session's settings."""
    raw = await _raw(uow)
    notes: dict[int, list[NoteRow]] = {}
    for row in await raw.fetch(f"SELECT id, event_id, at FROM {SCHEMA}.notes ORDER BY id"):
        notes.setdefault(row["event_id"], []).append(NoteRow(row["id"], row["at"]))
    return [
        EventRow(
            row["id"],
            row["at"],
            row["local"],
            tuple(notes[row["id"]]),
            tuple(note.at for note in notes[row["id"]]),
        )
        for row in await raw.fetch(f"SELECT id, at, local FROM {SCHEMA}.events ORDER BY id")
    ]


async def _read_every_shape(uow: Any) -> dict[str, list[EventRow]]:
    shapes: dict[str, list[EventRow]] = {
        "nested": await EVENTS.all(uow, order_by=("id",), per_level=False),
        "per level": await EVENTS.all(uow, order_by=("id",), per_level=True),
        "page": list((await EVENTS.page(uow, limit=len(AT), order_by=("id",))).items),
    }
    shapes["get"] = [found for i in range(1, len(AT) + 1) if (found := await EVENTS.get(uow, i))]
    return shapes


def _as_text(statements: list[str]) -> bool:
    """Whether any statement reads a timestamp as text: at its root, or after a level's sort."""
    cast = re.compile(r"CAST\(([\w.]+\.(at|local)|_sorted\._v\d+) AS TEXT\)")
    return any(cast.search(sql) for sql in statements)


async def test_timestamps_are_read_as_text_and_equal_the_drivers_values(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with direct_statements(db) as statements:
            shapes = await _read_every_shape(uow)
        expected = await _expected(uow)
    assert _as_text(statements)
    assert expected[0].at is not None
    assert expected[0].at.tzinfo is UTC
    for shape, events in shapes.items():
        # repr tells the time zone objects apart (and naive from aware), == does not.
        assert repr(events) == repr(expected), shape


@pytest.mark.parametrize(
    "setting",
    [
        "SET LOCAL TIME ZONE 'Asia/Kolkata'",
        "SET LOCAL TIME ZONE 'America/St_Johns'",
        "SET LOCAL DateStyle = 'SQL, DMY'",
        "SET LOCAL DateStyle = 'German'",
    ],
)
async def test_other_zones_and_date_styles_read_binary_values(db: Database, setting: str) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(text(setting))
        with direct_statements(db) as statements:
            shapes = await _read_every_shape(uow)
        expected = await _expected(uow)
    assert statements
    assert not _as_text(statements)
    for shape, events in shapes.items():
        assert repr(events) == repr(expected), shape
    async with db.unit_of_work() as uow:  # the setting ended with its transaction
        with direct_statements(db) as statements:
            await EVENTS.get(uow, 1)
    assert _as_text(statements)


async def test_pages_ordered_by_a_timestamp_walk_every_row_once(db: Database) -> None:
    async with db.unit_of_work() as uow:
        raw = await _raw(uow)
        in_order = await raw.fetch(f"SELECT id, at FROM {SCHEMA}.notes ORDER BY at, id")
        expected = [NoteRow(row["id"], row["at"]) for row in in_order]
        seen: list[NoteRow] = []
        after = None
        while True:
            page = await NOTES.page(uow, after=after, limit=3, order_by=("at",))
            seen.extend(page.items)
            if page.next_cursor is None:
                break
            after = page.next_cursor
        # The cursor is the repository's: from a binary read of the same page.
        first = await uow.repository(NoteRepository).page(limit=3, order_by=("at",))
        assert first.next_cursor == (await NOTES.page(uow, limit=3, order_by=("at",))).next_cursor
    assert repr(seen) == repr(expected)


async def test_a_timestamp_python_cannot_hold_is_a_clear_error(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(
            text(f"UPDATE {SCHEMA}.events SET at = '0044-03-15 12:00:00+00 BC' WHERE id = 1")
        )
        with pytest.raises(ValueError, match="outside Python's datetime range") as raised:
            await EVENTS.get(uow, 1)
        assert "0044" not in str(raised.value)
    # Not committed: rolled back.


def _nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"], *(n for child in plan.get("Plans", ()) for n in _nodes(child))]


async def test_per_level_reads_cast_after_their_one_sort(db: Database) -> None:
    async with db.unit_of_work() as uow:
        raw = await _raw(uow)
        dialect = (await uow.session.connection()).dialect
        levels = EVENTS._build(("all", ("id",), False, True), dialect, True).levels
        assert len(levels) == 2  # the notes, and the notes' times
        for level in levels:
            assert re.search(r"CAST\(_sorted\._v\d+ AS TEXT\)", level.sql)
            explained = await raw.fetchval(f"EXPLAIN (FORMAT JSON) {level.sql}", list(range(9)))
            if isinstance(explained, str):  # SQLAlchemy's connections decode json already
                explained = json.loads(explained)
            nodes = _nodes(explained[0]["Plan"])
            # The outer ORDER BY repeats the subquery's: met, not sorted again.
            assert nodes[0] == "Subquery Scan", nodes
            assert sum("Sort" in node for node in nodes) == 1, nodes


class EventRepository(Repository[Event]):
    model = Event


def _orm_rows(events: list[Event]) -> list[EventRow]:
    return [
        EventRow(
            e.id,
            e.at,
            e.local,
            tuple(NoteRow(n.id, n.at) for n in e.notes),
            tuple(n.at for n in e.notes),
        )
        for e in events
    ]


@pytest.mark.parametrize("setting", [None, "SET LOCAL TIME ZONE 'Asia/Kolkata'"])
async def test_repository_reads_equal_the_drivers_values(db: Database, setting: str | None) -> None:
    """The repository's driver reads take timestamps as text on the same terms: the
    whole plan nested (`get`), the root alone (`get` without a plan), and each
    collection per level (`list`: SQLAlchemy reads the root)."""
    reads = {
        "nested": lambda r: [r.get(i, load=("notes",)) for i in range(1, len(AT) + 1)],
        "root": lambda r: [r.get(i) for i in range(1, len(AT) + 1)],
        "per level": lambda r: [r.list(order_by=("id",), load=("notes",))],
    }
    for shape, read in reads.items():
        async with db.unit_of_work() as uow:
            if setting:
                await uow.session.execute(text(setting))
            with direct_statements(db) as statements:
                found: list[Any] = []
                for pending in read(uow.repository(EventRepository)):
                    done = await pending
                    found.extend(done if isinstance(done, list) else [done])
            expected = await _expected(uow)
            if shape == "root":
                got = [(e.id, e.at, e.local) for e in found]
                assert repr(got) == repr([(e.id, e.at, e.local) for e in expected])
            else:
                assert repr(_orm_rows(found)) == repr(expected), shape
        assert _as_text(statements) is (setting is None), shape
