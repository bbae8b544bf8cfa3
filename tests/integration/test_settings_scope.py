"""Transaction settings end with their transaction, on the very connection that ran them.

On the direct pool with one connection, the next unit of work gets the same
server connection, so a role, claims or timeouts applied for the session
(``set_config(..., false)``) instead of the transaction would reach the next
request. Through PgBouncer the next unit of work may land anywhere: the same
checks run there too.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from tests.library.repositories import CLAIMS_SETTING

from harbordb import Database

STATE = text(
    "SELECT pg_backend_pid() AS pid, current_user AS role, "
    "current_setting(:claims, true) AS claims, "
    "current_setting('statement_timeout') AS statement_timeout, "
    "current_setting('lock_timeout') AS lock_timeout, "
    "current_setting('transaction_read_only') AS read_only"
)


@pytest.mark.parametrize("end", ["commit", "rollback"])
async def test_settings_do_not_outlive_their_unit_of_work(
    one_connection_db: Database, end: str
) -> None:
    db = one_connection_db
    async with db.unit_of_work() as uow:
        before = (await uow.session.execute(STATE, {"claims": CLAIMS_SETTING})).one()
    options = {
        "role": "reader",
        "claims": {"sub": "42"},
        "statement_timeout": 1.5,
        "lock_timeout": 0.25,
        "read_only": True,
    }
    async with db.unit_of_work(**options) as uow:  # type: ignore[arg-type]
        inside = (await uow.session.execute(STATE, {"claims": CLAIMS_SETTING})).one()
        if end == "commit":
            await uow.commit()
    assert inside.role == "library_reader"
    assert inside.claims == '{"sub":"42"}'
    assert (inside.statement_timeout, inside.lock_timeout) == ("1500ms", "250ms")
    assert inside.read_only == "on"
    async with db.unit_of_work() as uow:
        after = (await uow.session.execute(STATE, {"claims": CLAIMS_SETTING})).one()
    if db.settings.pooler == "none":
        assert after.pid == inside.pid == before.pid  # the same server connection
    assert after.role == before.role != "library_reader"
    assert after.claims in (None, "")
    assert (after.statement_timeout, after.lock_timeout) == (
        before.statement_timeout,
        before.lock_timeout,
    )
    assert after.read_only == "off"
