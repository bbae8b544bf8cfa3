"""A client that disconnects cancels its request's work: the slow statement stops
on the server (the driver's cancel request) and no connection is held for
nobody, directly and through PgBouncer."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from fastapi import APIRouter
from sqlalchemy import text

from harbor_commerce.api import ApiSettings, create_app
from harbor_commerce.api.deps import ReadWork
from harbor_commerce.uow import CommerceWork
from harbordb import Database

KEY = "a-test-signing-key-that-is-long-enough-for-hs256"
MARK = "disconnect-probe-7d1e"
DIRECT_AND_POOLED = ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)]

probes = APIRouter()


@probes.get("/probe/slow")
async def slow(uow: ReadWork) -> dict[str, Any]:
    await uow.session.execute(text(f"SELECT pg_sleep(60) /* {MARK} */"))
    return {}


@pytest.fixture(params=DIRECT_AND_POOLED)
def api_db(request: pytest.FixtureRequest) -> Database[CommerceWork]:
    name = "database" if request.param == "direct" else "pooled_database"
    db: Database[CommerceWork] = request.getfixturevalue(name)
    return db


async def _running(database: Database[CommerceWork]) -> int:
    async with database.unit_of_work(read_only=True) as uow:
        found = await uow.session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE :mark AND pid <> pg_backend_pid()"
            ),
            {"mark": f"%{MARK}%"},
        )
    return int(found or 0)


async def _until(database: Database[CommerceWork], *, running: bool) -> None:
    """Poll pg_stat_activity until the probe's statement is (or is no longer) active."""
    for _ in range(100_000):  # bounded by the caller's fail_after
        if (await _running(database) > 0) == running:
            return
        await anyio.sleep(0.05)


async def test_a_disconnect_cancels_the_running_statement(
    api_db: Database[CommerceWork], database: Database[CommerceWork]
) -> None:
    app = create_app(ApiSettings(jwt_key=KEY, statement_timeout=120), database=api_db)
    app.include_router(probes)
    disconnect = anyio.Event()
    sent: list[dict[str, Any]] = []
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/probe/slow", "raw_path": b"/probe/slow", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"harbor.test")], "client": ("127.0.0.1", 1),
        "server": ("harbor.test", 80),
    }  # fmt: skip
    with anyio.fail_after(45):  # far below the statement's 60 s
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app, scope, receive, send)
            await _until(database, running=True)  # the statement runs on the server
            disconnect.set()
        await _until(database, running=False)  # and then it does not
    assert sent == []  # nobody to answer
    if api_db.settings.pooler == "none":
        assert api_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
