"""`harbordb doctor`: check a real deployment against the settings harbordb will use.

Each check returns `Finding`s: ``ok``, ``warn`` (worth knowing) or
``problem`` (harbordb will misbehave or fail). The checks:

- **server**: connects, and reports PostgreSQL's version (``problem`` below 14).
- **pooler**: whether something sits between client and server (the server
  sees another port, or a Unix socket, than the URL names), and whether it
  pools per transaction: after this client's transaction ends, can another
  client's transaction run on the same server backend while this client is
  still connected? Only transaction (or statement) pooling allows that. The
  configured `pooler` must match: ``external`` behind a transaction pooler.
- **cancellation** (direct connections): ``client_connection_check_interval``
  set, so that a statement whose client vanished stops (``warn`` when 0).
- **statement cache**: harbordb turns off asyncpg's and SQLAlchemy's
  prepared-statement caches whatever the URL says, unless the service opted in
  to named statements (``named_statements``); reported for the record.
- **connections**: ``max_connections`` (less the reserved ones) against the
  configured pool times the number of service instances (direct connections).
- **roles**: the database roles the configuration names exist, and the
  connecting user may assume them.
- **migrations**: with an ``alembic.ini``, the database is at the scripts' head.

Messages never contain the URL or its password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from harbordb.config import Settings
from harbordb.db import STATEMENT_CACHE_SIZE, asyncpg_dsn, normalize_url

Level = Literal["ok", "warn", "problem"]
MIN_SERVER_VERSION = 14
PROBE_TIMEOUT = 5.0  # seconds any one probe may wait (e.g. for a pooled server connection)
MAX_PROBE_CLIENTS = 16


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str


@dataclass(frozen=True, kw_only=True)
class DoctorOptions:
    """What the deployment is configured with (the service's own settings)."""

    settings: Settings
    instances: int = 1
    alembic_ini: str | None = None
    version_table: str = "alembic_version"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    reachable: bool = True

    def add(self, check: str, level: Level, message: str) -> None:
        self.findings.append(Finding(check, level, message))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]


async def _connect(dsn: str) -> Any:
    return await asyncio.wait_for(
        asyncpg.connect(
            dsn, statement_cache_size=0, server_settings={"application_name": "harbordb-doctor"}
        ),
        PROBE_TIMEOUT,
    )


async def diagnose(options: DoctorOptions) -> Report:
    """Run every check; a connection failure ends the report early."""
    report = Report()
    settings = options.settings
    if not settings.database_url:
        report.add("server", "problem", "no database URL given")
        return report
    dsn = asyncpg_dsn(settings.database_url)
    try:
        connection = await _connect(dsn)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        reason = getattr(exc, "sqlstate", None) or type(exc).__name__
        report.add("server", "problem", f"cannot connect ({reason})")
        report.reachable = False
        return report
    try:
        await _server(connection, report)
        behind = await _pooler(connection, dsn, settings, report)
        _statement_cache(settings, report)
        if not behind:
            await _vanished_clients(connection, report)
        await _connections(connection, options, behind, report)
        await _roles(connection, settings.roles, report)
        if options.alembic_ini:
            await _migrations(connection, options, report)
    finally:
        await connection.close()
    return report


async def _server(connection: Any, report: Report) -> None:
    number = int(await connection.fetchval("SELECT current_setting('server_version_num')"))
    version = await connection.fetchval("SELECT current_setting('server_version')")
    major = number // 10000
    if major < MIN_SERVER_VERSION:
        report.add("server", "problem", f"PostgreSQL {version}: harbordb needs 14 or newer")
    else:
        report.add("server", "ok", f"PostgreSQL {version}")


async def _pooler(connection: Any, dsn: str, settings: Settings, report: Report) -> bool:
    """Whether a transaction pooler sits in front; reports the mode and the fit."""
    url = normalize_url(settings.database_url or "")
    server_port = await connection.fetchval("SELECT inet_server_port()")
    client_port = url.port or 5432
    tcp = "host" not in url.query
    in_between = tcp and server_port != client_port
    # The probe opens up to MAX_PROBE_CLIENTS connections: only where a pooler may be.
    probe = in_between or settings.pooler == "external"
    transaction_pooling = probe and await _shares_backends(connection, dsn)
    if transaction_pooling:
        report.add(
            "pooler",
            "ok",
            "a transaction pooler sits in front (backends are shared "
            "between clients per transaction)",
        )
        if settings.pooler != "external":
            report.add(
                "pooler",
                "problem",
                "pooler is 'none' behind a transaction pooler: set "
                "pooler='external' (HARBORDB_POOLER=external) so that harbordb keeps no "
                "pool of its own",
            )
        return True
    if in_between:
        report.add(
            "pooler",
            "warn",
            "something sits in front of the server (it listens on "
            "another port) but does not share backends per transaction: session pooling "
            "or a plain proxy",
        )
    else:
        report.add("pooler", "ok", "no pooler: the client talks to PostgreSQL directly")
    if settings.pooler == "external":
        report.add(
            "pooler",
            "warn",
            "pooler is 'external' but no transaction pooler was "
            "detected: every unit of work opens a new server connection",
        )
    return False


async def _shares_backends(connection: Any, dsn: str) -> bool:
    """True if another client's transaction can run on this client's backend while this
    client stays connected: transaction (or statement) pooling."""
    mine = await connection.fetchval("SELECT pg_backend_pid()")
    holders: list[Any] = []
    try:
        for _ in range(MAX_PROBE_CLIENTS):
            try:
                other = await _connect(dsn)
            except (OSError, TimeoutError, asyncpg.PostgresError):
                return False
            holders.append(other)
            transaction = other.transaction()
            try:
                await asyncio.wait_for(transaction.start(), PROBE_TIMEOUT)
                pid = await asyncio.wait_for(
                    other.fetchval("SELECT pg_backend_pid()"), PROBE_TIMEOUT
                )
            except (TimeoutError, asyncpg.PostgresError):
                return False  # the pooler ran out of server connections first
            if pid == mine:
                return True
        return False
    finally:
        for other in holders:
            other.terminate()


def _statement_cache(settings: Settings, report: Report) -> None:
    if settings.named_statements:
        where = (
            "behind a pooler stated to track prepared statements"
            if settings.pooler == "external"
            else "direct to PostgreSQL"
        )
        report.add(
            "statement cache",
            "ok",
            f"named_statements: asyncpg and SQLAlchemy cache {STATEMENT_CACHE_SIZE} named "
            f"prepared statements each per connection ({where})",
        )
        return
    url = normalize_url(settings.database_url or "")
    cache = url.query.get("prepared_statement_cache_size")
    report.add(
        "statement cache",
        "ok",
        f"asyncpg statement_cache_size=0 and SQLAlchemy "
        f"prepared_statement_cache_size={cache} (no named prepared statements: safe "
        "behind a transaction pooler)",
    )


async def _vanished_clients(connection: Any, report: Report) -> None:
    """A statement whose client is gone (a cancelled request, a killed process) runs to the
    end unless the server checks the socket: ``client_connection_check_interval``."""
    interval = await connection.fetchval(
        "SELECT current_setting('client_connection_check_interval', true)"
    )
    if interval in (None, "", "0"):
        report.add(
            "cancellation",
            "warn",
            "client_connection_check_interval is 0: a statement whose client vanished runs "
            "to its end (ALTER ROLE <the service's user> SET client_connection_check_interval "
            "= '1s')",
        )
    else:
        report.add("cancellation", "ok", f"client_connection_check_interval {interval}")


async def _connections(
    connection: Any, options: DoctorOptions, behind_pooler: bool, report: Report
) -> None:
    limit = int(await connection.fetchval("SELECT current_setting('max_connections')"))
    reserved = int(
        await connection.fetchval(
            "SELECT current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true), '0')::int"
        )
    )
    usable = limit - reserved
    settings = options.settings
    if behind_pooler or settings.pooler == "external":
        report.add(
            "connections",
            "ok",
            f"max_connections {limit}: server connections are the "
            "pooler's to size (harbordb keeps no pool)",
        )
        return
    most = (settings.pool_size + settings.max_overflow) * options.instances
    sizing = (
        f"{options.instances} instance(s) x (pool_size {settings.pool_size} + "
        f"max_overflow {settings.max_overflow}) = {most}"
    )
    if most > usable:
        report.add(
            "connections",
            "problem",
            f"{sizing} connections, but the server allows "
            f"{usable} ({limit} max_connections less {reserved} reserved)",
        )
    elif most > usable * 0.8:
        report.add("connections", "warn", f"{sizing} of {usable} usable connections")
    else:
        report.add("connections", "ok", f"{sizing} of {usable} usable connections")


async def _roles(connection: Any, roles: Mapping[str, str], report: Report) -> None:
    if not roles:
        report.add("roles", "ok", "no row-level security roles configured")
        return
    rows = await connection.fetch(
        "SELECT r.name, pg_has_role(current_user, p.oid, 'MEMBER') AS member "
        "FROM unnest($1::text[]) AS r(name) LEFT JOIN pg_roles p ON p.rolname = r.name",
        sorted(set(roles.values())),
    )
    found = {row["name"]: row["member"] for row in rows}
    for public, database in sorted(roles.items()):
        member = found.get(database)
        if member is None:
            report.add(
                "roles",
                "problem",
                f"role {public!r} maps to database role "
                f"{database!r}, which the server does not have",
            )
        elif not member:
            report.add(
                "roles",
                "problem",
                f"the connecting user may not assume {database!r} "
                f"(role {public!r}): GRANT {database} TO <the service's user>",
            )
        else:
            report.add("roles", "ok", f"role {public!r} -> {database!r}")


async def _migrations(connection: Any, options: DoctorOptions, report: Report) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    assert options.alembic_ini is not None
    heads = set(ScriptDirectory.from_config(Config(options.alembic_ini)).get_heads())
    exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", options.version_table)
    current: set[str] = set()
    if exists:
        rows = await connection.fetch(f'SELECT version_num FROM "{options.version_table}"')
        current = {row["version_num"] for row in rows}
    if current == heads:
        report.add("migrations", "ok", f"at head ({', '.join(sorted(heads))})")
    else:
        at = ", ".join(sorted(current)) or "none applied"
        report.add(
            "migrations",
            "problem",
            f"behind head: the database is at {at}, the "
            f"scripts' head is {', '.join(sorted(heads))} (harbordb migrate upgrade)",
        )


def format_report(report: Report) -> Sequence[str]:
    marks = {"ok": "ok     ", "warn": "warn   ", "problem": "PROBLEM"}
    return [f"{marks[f.level]}  {f.check}: {f.message}" for f in report.findings]


__all__ = ["DoctorOptions", "Finding", "Report", "diagnose", "format_report"]
