"""harbordb's engine settings hold up behind PgBouncer in transaction mode."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from harbordb.testing.cluster import PgBouncer

# The worker runs as a module from the checkout's root, so that it imports the library models.
REPO = Path(__file__).resolve().parents[2]
WORKER = "tests.integration.pgbouncer_load"
PROCESSES, TASKS, TRANSACTIONS = 4, 20, 30


async def run_load(url: str, mode: str) -> list[dict[str, object]]:
    async def one() -> dict[str, object]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", WORKER, url, mode, str(TASKS), str(TRANSACTIONS),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-2000:]
        result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    return list(await asyncio.gather(*(one() for _ in range(PROCESSES))))


async def prepared_statements_per_server_connection(bouncer: PgBouncer) -> dict[int, int]:
    """Hold `default_pool_size` transactions open at once so each lands on its own server
    connection, and read `pg_prepared_statements` on every one of them through the pooler."""
    connections = [await asyncpg.connect(bouncer.url, statement_cache_size=0) for _ in range(4)]
    try:
        transactions = [conn.transaction() for conn in connections]
        for tx in transactions:
            await tx.start()
        rows = [
            await conn.fetchrow(
                "SELECT pg_backend_pid() AS pid, count(*) AS n FROM pg_prepared_statements"
            )
            for conn in connections
        ]
        for tx in transactions:
            await tx.rollback()
    finally:
        for conn in connections:
            await conn.close()
    by_pid = {row["pid"]: row["n"] for row in rows}
    assert len(by_pid) == 4, "expected four distinct server connections"
    return by_pid


@pytest.mark.pgbouncer
async def test_harbordb_engine_survives_transaction_pooling(pgbouncer: PgBouncer) -> None:
    results = await run_load(pgbouncer.url, "harbordb")
    errors = [e for r in results for e in r["errors"]]  # type: ignore[attr-defined]
    assert errors == []
    assert sum(r["ok"] for r in results) == PROCESSES * TASKS * TRANSACTIONS  # type: ignore[misc]
    leftovers = await prepared_statements_per_server_connection(pgbouncer)
    assert set(leftovers.values()) == {0}, leftovers


@pytest.mark.pgbouncer
async def test_driver_default_caches_break_under_transaction_pooling(pgbouncer: PgBouncer) -> None:
    """The same load with asyncpg's default statement cache fails: the test above can fail."""
    results = await run_load(pgbouncer.url, "driver-defaults")
    errors = [e for r in results for e in r["errors"]]  # type: ignore[attr-defined]
    assert errors, "expected prepared-statement errors with the driver's default caches"
    assert any("prepared statement" in e for e in errors), errors[:5]
