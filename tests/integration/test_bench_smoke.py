"""The benchmark's smoke run: `python -m harbordb.bench --quick` against the test cluster.

Asserts what the results must show, never how fast anything was.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from harbordb.bench.options import WORKLOAD_KEYS
from harbordb.bench.servers import asyncpg_dsn, migrate
from harbordb.db import normalize_url
from harbordb.testing.cluster import PostgresCluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def bench_url(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    """An empty database of its own: the bench fills the schema and empties it again."""
    name = f"harbordb_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(pg_cluster.admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield normalize_url(pg_cluster.url).set(database=name).render_as_string(False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "harbordb.bench", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


@pytest.fixture
def quick_run(bench_url: str, tmp_path: Path) -> dict[str, Any]:
    done = _bench("--quick", "--only", ",".join(WORKLOAD_KEYS), "--database-url", bench_url,
                  "--output", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert bench_url not in done.stdout + done.stderr
    result: dict[str, Any] = json.loads((tmp_path / "quick.json").read_text())
    result["_stdout"] = done.stdout
    return result


def _statements(workload: dict[str, Any], variant: str) -> dict[int, float]:
    counts = {}
    for case in workload["cases"]:
        for record in case["variants"]:
            if record["variant"] == variant:
                counts[case["params"]["n"]] = record["statements_per_op"]
    return counts


def test_quick_run_shows_n_plus_one(quick_run: dict[str, Any]) -> None:
    assert set(quick_run["workloads"]) == set(WORKLOAD_KEYS)
    nplus1 = quick_run["workloads"]["nplus1"]
    selectin = _statements(nplus1, "selectinload")
    lazy = _statements(nplus1, "n+1")
    assert len(selectin) >= 3
    assert set(selectin.values()) == {2}, selectin  # constant in N
    assert lazy == {n: n + 1 for n in lazy}, lazy  # N + 1
    for case in nplus1["cases"]:
        for record in case["variants"]:
            assert record["samples"] >= 1
            assert record["p50_ms"] > 0
    assert "nplus1" in quick_run["_stdout"]
    env = quick_run["environment"]
    assert env["postgresql"]
    assert env["libraries"]["sqlalchemy"]


def test_bad_flags_fail_clearly() -> None:
    done = _bench("--only", "W9")
    assert done.returncode == 2
    assert "unknown workload 'W9'" in done.stderr
    done = _bench("--repeats", "0")
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr


async def test_non_empty_database_is_refused(bench_url: str, tmp_path: Path) -> None:
    """The bench never mixes its rows with someone else's."""
    await asyncio.to_thread(migrate, bench_url)
    connection = await asyncpg.connect(asyncpg_dsn(bench_url))
    try:
        await connection.execute("INSERT INTO tags (name) VALUES ('not-the-bench')")
    finally:
        await connection.close()
    done = await asyncio.to_thread(
        _bench, "--quick", "--only", "nplus1", "--database-url", bench_url,
        "--output", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1
    assert "table tags already has rows" in done.stderr
    assert not (tmp_path / "quick.json").exists()
