"""``harbordb db up`` and ``harbordb doctor``: local servers and deployment checks.

``harbordb db up`` starts an embedded PostgreSQL (the ``embedded`` extra) and,
with ``--pgbouncer``, a PgBouncer in transaction mode in front of it; prints
their URLs (trust authentication on loopback and a Unix socket: no password
exists to leak); with ``--migrate`` upgrades it to head with ``--config``;
then waits. Ctrl-C (or SIGTERM) stops both and deletes their data. Exit
codes: 0 stopped cleanly, 2 usage or configuration error, 3 a server or the
migration failed.

``harbordb doctor`` checks a deployment (`harbordb.doctor`) against the
settings the service uses: the environment's (``HARBORDB_*``), overridden by
the options. Exit codes: 0 no problem (warnings allowed), 1 problems found,
2 usage or configuration error, 3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_FAILED = 3


def add_db_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser(
        "db",
        help="local development databases (db up)",
        description="Local development databases.",
    )
    actions = db.add_subparsers(title="actions", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up",
        help="run an embedded PostgreSQL (and PgBouncer) until Ctrl-C",
        description="Start an embedded PostgreSQL, optionally PgBouncer in transaction mode in "
        "front of it and migrations to head; print the URLs; stop and delete everything on "
        "Ctrl-C. Exit codes: 0 stopped, 2 usage or configuration error, 3 start or migration "
        "failed.",
    )
    up.add_argument("--pgbouncer", action="store_true", help="put PgBouncer in front")
    up.add_argument("--migrate", action="store_true", help="upgrade to head with --config")
    up.add_argument("--config", metavar="PATH", default="alembic.ini", help="default ./alembic.ini")
    up.add_argument("--database", default="harbordb", help="the database to create")
    up.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the servers keep their files (default: a new temporary directory)",
    )
    up.set_defaults(handler=_db_up)


def _stop_on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _db_up(args: argparse.Namespace) -> int:
    from harbordb.testing.cluster import HarnessError, start_pgbouncer, start_postgres

    def say(message: str) -> None:
        print(message, flush=True)

    config = Path(args.config)
    if args.migrate and not config.is_file():
        print(f"harbordb db up: no Alembic config at {config}: pass --config", file=sys.stderr)
        return EXIT_USAGE
    # Also SIGINT: a shell starts background jobs with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_on_signal)
    with ExitStack() as stack:
        try:
            if args.data_dir:
                base = Path(args.data_dir)
                base.mkdir(parents=True, exist_ok=True)
            else:
                base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="harbordb-")))
            cluster = start_postgres(base, database=args.database)
            stack.callback(cluster.stop)
            say(f"postgresql: {cluster.url}")
            if args.migrate:
                _migrate(cluster.url, config)
                say(f"migrated to head ({config})")
            if args.pgbouncer:
                bouncer = start_pgbouncer(cluster, base)
                stack.callback(bouncer.stop)
                say(f"pgbouncer:  {bouncer.url}  (transaction mode: HARBORDB_POOLER=external)")
            say(f"export HARBORDB_DATABASE_URL='{cluster.url}'")
            say("ready; Ctrl-C stops and deletes everything")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            say("stopping")
        except HarnessError as exc:
            print(f"harbordb db up: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except _MigrationFailed as exc:
            print(f"harbordb db up: migration failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK


class _MigrationFailed(Exception):
    pass


def _migrate(url: str, config_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    config = Config(str(config_path))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    try:
        command.upgrade(config, "head")
    except (CommandError, SQLAlchemyError, OSError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise _MigrationFailed(f"{type(exc).__name__}: {first_line}") from exc


def add_doctor_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = subparsers.add_parser(
        "doctor",
        help="check a deployment: server, pooler, caches, connections, roles, migrations",
        description="Check a real deployment against harbordb's settings and say what is "
        "wrong. Settings come from the environment (HARBORDB_*), overridden by the options. "
        "Exit codes: 0 no problem, 1 problems found, 2 usage or configuration error, "
        "3 the server could not be reached.",
    )
    doctor.add_argument("--database-url", metavar="URL", help="default: HARBORDB_DATABASE_URL")
    doctor.add_argument("--pooler", choices=("none", "external"), help="default: HARBORDB_POOLER")
    doctor.add_argument("--pool-size", type=int, help="the service's pool_size (default 5)")
    doctor.add_argument("--max-overflow", type=int, help="the service's max_overflow (10)")
    doctor.add_argument(
        "--instances", type=int, default=1, help="service processes sharing the server"
    )
    doctor.add_argument(
        "--roles", metavar="PUBLIC=ROLE,...", help="row-level security roles (HARBORDB_ROLES)"
    )
    doctor.add_argument("--config", metavar="PATH", help="an alembic.ini: check migrations")
    doctor.add_argument(
        "--version-table", default="alembic_version", help="Alembic's version table"
    )
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    import asyncio

    from harbordb.config import Settings, parse_roles
    from harbordb.doctor import DoctorOptions, diagnose, format_report
    from harbordb.errors import ConfigurationError

    try:
        overrides: dict[str, Any] = {
            "database_url": args.database_url,
            "pooler": args.pooler,
            "pool_size": args.pool_size,
            "max_overflow": args.max_overflow,
            "roles": parse_roles(args.roles) if args.roles is not None else None,
        }
        settings = Settings.from_env(**overrides)
        if not settings.database_url:
            raise ConfigurationError("no database URL: pass --database-url")
        if args.instances < 1:
            raise ConfigurationError("--instances must be at least 1")
        if args.config and not Path(args.config).is_file():
            raise ConfigurationError(f"no Alembic config at {args.config}")
        options = DoctorOptions(
            settings=settings,
            instances=args.instances,
            alembic_ini=args.config,
            version_table=args.version_table,
        )
        report = asyncio.run(diagnose(options))
    except ConfigurationError as exc:
        print(f"harbordb doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for line in format_report(report):
        print(line)
    if (
        any(f.check == "server" and f.level == "problem" for f in report.findings)
        and len(report.findings) == 1
    ):
        return EXIT_FAILED
    problems = len(report.problems)
    print(f"{problems} problem(s)" if problems else "no problems")
    return EXIT_PROBLEMS if problems else EXIT_OK
