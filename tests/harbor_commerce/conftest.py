"""Harbor Commerce's tests: the worked example on harbordb, with the plugin's `database`
built from Harbor's options (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from harbor_commerce.seed import delete_seeded
from harbordb import Database


@pytest.fixture(autouse=True)
def _delete_seeded_rows(request: pytest.FixtureRequest) -> None:
    """Modules whose code under test commits seed their rows under a module-level
    ``SEED_PREFIX`` (`harbor_commerce.seed`): those rows are deleted after each test,
    as other tests expect empty tables. (Sync, so that it may request an async fixture.)"""
    if hasattr(request.module, "SEED_PREFIX"):
        request.getfixturevalue("_seeded_rows")


@pytest.fixture
async def _seeded_rows(request: pytest.FixtureRequest, database: Database) -> AsyncIterator[None]:
    yield
    await delete_seeded(database, request.module.SEED_PREFIX)
