from typing import Any

import pytest

from blogsvc.work import CLAIMS_SETTING, ROLES, BlogWork

pytest_plugins = ["harbordb.testing.plugin"]


@pytest.fixture(scope="session")
def harbordb_database_options() -> dict[str, Any]:
    return {"unit_of_work": BlogWork, "roles": ROLES, "claims_setting": CLAIMS_SETTING}
