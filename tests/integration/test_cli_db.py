"""``harbordb db up`` and ``harbordb doctor`` against real servers.

`db up` runs as a subprocess (it waits for a signal); `doctor` runs in-process
against the suite's embedded server and its PgBouncer, once configured right
and once for each injected misconfiguration.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import pytest

from harbordb.cli import main
from harbordb.db import asyncpg_dsn
from harbordb.testing.cluster import PgBouncer, PostgresCluster
from harbordb.testing.plugin import scratch_database, server_dir

LIBRARY_INI = Path(__file__).resolve().parents[1] / "library" / "alembic.ini"
VERSION_TABLE = "alembic_version_library"
GOOD = ["--roles", "reader=library_reader", "--config", str(LIBRARY_INI),
        "--version-table", VERSION_TABLE]  # fmt: skip


async def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = await anyio.to_thread.run_sync(main, ["doctor", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_doctor_passes_a_correct_configuration(
    migrated_url: str, pgbouncer: PgBouncer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = await doctor(capsys, "--database-url", migrated_url, *GOOD)
    assert code == 0, output
    assert "PostgreSQL 18" in output
    assert "no pooler" in output
    assert "migrations: at head" in output
    assert "warn     cancellation: client_connection_check_interval is 0" in output
    code, output = await doctor(capsys, "--database-url", pgbouncer.url, "--pooler", "external")
    assert code == 0, output
    assert "a transaction pooler sits in front" in output


async def test_doctor_finds_injected_misconfigurations(
    migrated_url: str,
    pgbouncer: PgBouncer,
    pg_cluster: PostgresCluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 1. Behind PgBouncer in transaction mode, configured without a pooler.
    code, output = await doctor(capsys, "--database-url", pgbouncer.url, "--pooler", "none")
    assert code == 1
    assert "PROBLEM  pooler: pooler is 'none' behind a transaction pooler" in output

    # 2. A role the configuration names but the server lacks.
    code, output = await doctor(
        capsys, "--database-url", migrated_url, "--roles", "reader=library_reader,x=no_such_role"
    )
    assert code == 1
    assert "PROBLEM  roles: role 'x' maps to database role 'no_such_role'" in output
    assert "ok       roles: role 'reader'" in output

    # 3. More pooled connections than the server allows (200 on the test server).
    code, output = await doctor(
        capsys, "--database-url", migrated_url, "--pool-size", "40", "--max-overflow", "30",
        "--instances", "3",
    )  # fmt: skip
    assert code == 1
    assert "PROBLEM  connections: 3 instance(s) x (pool_size 40 + max_overflow 30) = 210" in output

    # 4. Migrations behind head: a database nobody migrated.
    async with scratch_database(pg_cluster, "doctor") as empty:
        admin = await asyncpg.connect(asyncpg_dsn(empty))
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'ALTER DATABASE "{name}" SET client_connection_check_interval = 1000')
        await admin.close()
        code, output = await doctor(capsys, "--database-url", empty, *GOOD[2:])
    assert code == 1
    assert "PROBLEM  migrations: behind head: the database is at none applied" in output
    assert "ok       cancellation: client_connection_check_interval 1s" in output

    # 5. Behind no pooler, configured for one.
    code, output = await doctor(capsys, "--database-url", migrated_url, "--pooler", "external")
    assert code == 0  # a warning, not a problem: it works, slowly
    assert "warn     pooler: pooler is 'external' but no transaction pooler" in output


async def test_doctor_exit_codes_for_unreachable_and_unusable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "pw-never-printed"
    url = f"postgresql://someone:{secret}@127.0.0.1:1/nowhere"
    code, output = await doctor(capsys, "--database-url", url)
    assert code == 3
    assert "cannot connect" in output
    assert secret not in output
    code, output = await doctor(capsys, "--database-url", "mysql://x@y/z")
    assert code == 2
    code, output = await doctor(capsys, "--database-url", url, "--config", "/no/such/alembic.ini")
    assert code == 2


def test_db_up_serves_migrates_and_stops_on_ctrl_c() -> None:
    with server_dir("db-up") as base:  # outside pytest's tree, which runs reset to 0700
        _db_up_and_stop(base / "servers")


def _db_up_and_stop(data: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARBORDB_", "PG"))}
    command = [sys.executable, "-c", "from harbordb.cli import main; raise SystemExit(main())",
               "db", "up", "--pgbouncer", "--migrate", "--config", str(LIBRARY_INI),
               "--data-dir", str(data)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready"):
                break
        output = "".join(lines)
        assert "ready" in output, output
        direct = re.search(r"^postgresql: (\S+)", output, re.M)
        pooled = re.search(r"^pgbouncer:  (\S+)", output, re.M)
        assert direct is not None
        assert pooled is not None
        assert "@" in direct.group(1)
        assert ":" not in direct.group(1).split("@")[0].removeprefix("postgresql://")  # no password
        code = main(["doctor", "--database-url", pooled.group(1), "--pooler", "external",
                     "--config", str(LIBRARY_INI), "--version-table", VERSION_TABLE])  # fmt: skip
        assert code == 0
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "stopping" in rest
    assert not (data / "pgdata").exists()
    assert not (data / "pgbouncer").exists()


def test_help_everywhere() -> None:
    for argv in (["--help"], ["db", "--help"], ["db", "up", "--help"], ["doctor", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
