"""The library's tests run on the models of tests/library, with their own unit of work
(`LibraryWork`), roles and claims setting: `database` and `pooled_database` are rebuilt
here with those options (session fixtures are cached per definition, so overriding
`harbordb_database_options` alone would hand out whichever was built first)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.library.repositories import DATABASE_OPTIONS, LibraryWork

from harbordb import Database
from harbordb.testing.cluster import PgBouncer
from harbordb.testing.plugin import server_dir


@pytest.fixture
def server_tmp() -> Iterator[Path]:
    """A test's directory for servers it starts, outside pytest's temporary tree,
    which a nested pytest session closes to other users (`server_dir`)."""
    with server_dir("test") as path:
        yield path


@pytest.fixture(scope="session")
def harbordb_database_options() -> dict[str, Any]:
    return dict(DATABASE_OPTIONS)


@pytest.fixture(scope="session")
async def database(migrated_url: str) -> AsyncIterator[Database[LibraryWork]]:
    async with Database(migrated_url, pooler="none", pool_size=10, **DATABASE_OPTIONS) as database:
        yield database


@pytest.fixture(scope="session")
async def pooled_database(pgbouncer: PgBouncer) -> AsyncIterator[Database[LibraryWork]]:
    async with Database(pgbouncer.url, pooler="external", **DATABASE_OPTIONS) as database:
        yield database
