from typing import Any

import pytest

from harbor_commerce.uow import DATABASE_OPTIONS

pytest_plugins = ["harbordb.testing.plugin"]


@pytest.fixture(scope="session")
def harbordb_database_options() -> dict[str, Any]:
    """The suite's `database` fixtures are Harbor Commerce's (`CommerceWork`, its roles)."""
    return dict(DATABASE_OPTIONS)
