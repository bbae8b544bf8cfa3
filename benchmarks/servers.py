"""The servers a bench run talks to: a throwaway embedded PostgreSQL or a given one,
the schema migrated by Alembic, and optionally PgBouncer in front.

Everything here is synchronous and runs before the event loop starts: the
embedded server and PgBouncer are subprocesses, and Alembic's env.py runs its
own event loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import make_url

from harbordb.db import normalize_url
from harbordb.errors import ConfigurationError
from harbordb.testing.cluster import (
    HarnessError,
    PostgresCluster,
    find_pgbouncer,
    start_pgbouncer,
    start_postgres,
)

# One server connection per pool slot in every W6 mode: QueuePool(pool_size=10,
# max_overflow=0) directly, and PgBouncer's default_pool_size=10 behind it.
POOL_SIZE = 10


class BenchError(RuntimeError):
    """The bench cannot run as asked; the message says why (never a password)."""


@dataclass(frozen=True)
class Target:
    """Where the workloads run."""

    direct_url: str  # PostgreSQL itself: migrations, seeding, W6's direct mode
    bouncer_url: str | None  # PgBouncer in front of it, when one was started
    via_pgbouncer: bool  # --pgbouncer: the workloads use `bouncer_url`
    server: str  # "embedded" or "external"

    @property
    def url(self) -> str:
        """The URL the workloads use."""
        if self.via_pgbouncer:
            assert self.bouncer_url is not None
            return self.bouncer_url
        return self.direct_url


ROOT = Path(__file__).resolve().parent.parent
"""The checkout the benchmarks run from."""


def find_alembic_ini() -> Path:
    """Harbor Commerce's alembic.ini: ``HARBORDB_ALEMBIC_INI``, else the checkout's."""
    configured = os.environ.get("HARBORDB_ALEMBIC_INI")
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise BenchError(f"HARBORDB_ALEMBIC_INI={configured} is not a file")
        return path
    candidate = ROOT / "alembic.ini"
    if not candidate.is_file():
        raise BenchError(f"{candidate} is missing: set HARBORDB_ALEMBIC_INI")
    return candidate


def migrate(url: str) -> None:
    """Bring the database to Alembic head (a no-op when it is there already)."""
    config = Config(str(find_alembic_ini()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


def checkout_results_dir() -> Path:
    """benchmarks/results of the checkout."""
    return ROOT / "benchmarks" / "results"


@contextmanager
def open_target(database_url: str | None, *, pgbouncer: str, notes: list[str]) -> Iterator[Target]:
    """Start what is needed, migrate, and stop it all on exit.

    `pgbouncer` is "required" (--pgbouncer: missing is an error), "wanted"
    (W6 is selected: missing is a note) or "no".
    """
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="harbordb-bench-"))
        stack.callback(shutil.rmtree, workdir, True)
        if database_url:
            try:
                url = normalize_url(database_url).render_as_string(hide_password=False)
            except ConfigurationError as exc:
                raise BenchError(f"--database-url: {exc}") from None
            cluster = PostgresCluster(url=url, admin_url=url, socket_dir=None)
            server = "external"
        else:
            try:
                cluster = start_postgres(workdir)
            except HarnessError as exc:
                raise BenchError(str(exc)) from None
            stack.callback(cluster.stop)
            server = "embedded"
        try:
            migrate(cluster.url)
        except BenchError:
            raise
        except Exception as exc:
            where = make_url(cluster.url).render_as_string(hide_password=True)
            raise BenchError(f"migrating {where} failed: {type(exc).__name__}: {exc}") from exc
        bouncer_url = None
        if pgbouncer != "no":
            if find_pgbouncer() is None:
                message = "pgbouncer not found (Debian/Ubuntu: apt-get install pgbouncer)"
                if pgbouncer == "required":
                    raise BenchError(f"--pgbouncer: {message}")
                notes.append(f"W6 skipped: {message}.")
            else:
                try:
                    bouncer = start_pgbouncer(cluster, workdir, pool_size=POOL_SIZE)
                except HarnessError as exc:
                    raise BenchError(str(exc)) from None
                stack.callback(bouncer.stop)
                bouncer_url = bouncer.url
        yield Target(
            direct_url=cluster.url,
            bouncer_url=bouncer_url,
            via_pgbouncer=pgbouncer == "required",
            server=server,
        )


def pgbouncer_version() -> str | None:
    executable = find_pgbouncer()
    if executable is None:
        return None
    try:
        done = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else None
