"""Watching the statements harbordb sends on the driver, past SQLAlchemy's execution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection

from harbordb import Database
from harbordb.querycount import observe_direct


@contextmanager
def direct_statements(db: Database) -> Iterator[list[str]]:
    """The statements sent on the driver past SQLAlchemy while open (an observer of
    `harbordb.querycount.observe_direct`, which also makes reads take the observed
    path)."""
    seen: list[str] = []

    class Observer:
        def direct_started(self, connection: Connection, statement: str) -> Any:
            seen.append(statement)
            return lambda rows, error: None

    observer = Observer()
    observe_direct(db.engine.sync_engine, observer)
    try:
        yield seen
    finally:
        observe_direct(db.engine.sync_engine, observer, remove=True)
