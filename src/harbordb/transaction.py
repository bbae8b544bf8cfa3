"""Transaction settings: a unit of work's options, checked, as one ``set_config`` statement.

Each setting is applied with ``set_config(name, value, true)``, which is
``SET LOCAL`` in function form: names and values travel as bind parameters,
nothing is interpolated into SQL, and everything ends with the transaction
(safe behind PgBouncer in transaction mode). READ ONLY and the isolation level
are not among them: they travel with BEGIN (`harbordb.uow`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from harbordb.driver import fetch, held
from harbordb.errors import ConfigurationError, DatabaseError, HarborError, PermissionDenied
from harbordb.inputs import check_json

Duration = float | timedelta

# PostgreSQL's timeouts are a 32-bit number of milliseconds.
_MAX_TIMEOUT_MS = 2**31 - 1


def transaction_settings(
    *,
    read_only: bool,
    statement_timeout: Duration | None,
    lock_timeout: Duration | None,
    claims: Mapping[str, Any] | None,
    role: str | None,
    roles: Mapping[str, str],
    claims_setting: str,
) -> dict[str, str]:
    """Validate the options; return the settings to apply, name -> value."""
    settings: dict[str, str] = {}
    if not isinstance(read_only, bool):
        raise ConfigurationError("read_only must be True or False")
    if read_only:
        # What SET TRANSACTION READ ONLY sets.
        settings["transaction_read_only"] = "on"
    if statement_timeout is not None:
        settings["statement_timeout"] = f"{milliseconds('statement_timeout', statement_timeout)}ms"
    if lock_timeout is not None:
        settings["lock_timeout"] = f"{milliseconds('lock_timeout', lock_timeout)}ms"
    if role is not None:
        if role not in roles:
            allowed = ", ".join(sorted(roles)) or "none: configure Database(roles={...})"
            raise ConfigurationError(f"unknown role {role!r}: a unit of work may assume {allowed}")
        settings["role"] = roles[role]
    if claims is not None:
        if not isinstance(claims, Mapping):
            raise ConfigurationError("claims must be a mapping (the decoded JWT payload)")
        check_json("claims", claims)
        try:
            settings[claims_setting] = json.dumps(
                dict(claims), separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError):
            raise ConfigurationError("claims must be JSON-serialisable") from None
    return settings


def within_deadline(settings: Mapping[str, str], deadline: float) -> dict[str, str]:
    """A copy of `settings` whose statement timeout ends by `deadline` (the unit of
    work's `timeout`, on anyio's clock) at the latest."""
    settings = dict(settings)
    if deadline < math.inf:
        remaining = max(1, math.ceil((deadline - anyio.current_time()) * 1000))
        given = settings.get("statement_timeout")
        if given is None or int(given.removesuffix("ms")) > remaining:
            settings["statement_timeout"] = f"{remaining}ms"
    return settings


def role_error(
    error: DatabaseError, role: str | None, database_role: str | None
) -> HarborError | None:
    """The error naming the public role when the server refused to assume it, else None.

    22023 (invalid value for "role"): the database role does not exist; 42501:
    the connecting user may not assume it (it is not a member of it).
    """
    if role is None or error.sqlstate not in ("22023", "42501"):
        return None
    if error.sqlstate == "22023":
        return ConfigurationError(
            f"role {role!r} maps to database role {database_role!r}, which the server "
            "does not have: create it in a migration, or fix Database(roles=...)"
        )
    return PermissionDenied(
        f"role {role!r}: the connecting user may not assume database role "
        f"{database_role!r} (GRANT {database_role} TO <the service's user>)",
        sqlstate=error.sqlstate,
    )


def milliseconds(name: str, value: Duration) -> int:
    """A positive duration (seconds or a timedelta) in whole milliseconds, rounded up."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(f"{name} must be a number of seconds or a timedelta")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f"{name} must be a positive, finite duration")
    ms = math.ceil(seconds * 1000)
    if ms > _MAX_TIMEOUT_MS:
        raise ConfigurationError(f"{name} must be at most {_MAX_TIMEOUT_MS // 1000} seconds")
    return ms


async def send_settings(
    session: AsyncSession, connection: AsyncConnection, settings: Mapping[str, str], joined: bool
) -> None:
    """Send `settings` in one statement, on the session's `connection`.

    On asyncpg the statement goes to the driver, as projection reads do
    (`harbordb.driver`): BEGIN first, with the flags the checkout set, then the
    statement, counted, observed and translated as SQLAlchemy's would be, for a
    fraction of the client CPU. A unit of work `joined` to an outer transaction
    (its statements run in a savepoint SQLAlchemy begins with the first one) and
    other drivers send it through the session.
    """
    if not joined and connection.dialect.driver == "asyncpg":
        sql, args = setup_sql(settings)
        await fetch(await held(session), sql, args, begin=True)
    else:
        statement, params = setup_statement(settings)
        await session.execute(statement, params)


def setup_statement(settings: Mapping[str, str]) -> tuple[TextClause, dict[str, str]]:
    """One ``SELECT set_config(:name, :value, true), ...`` for every setting."""
    params: dict[str, str] = {}
    for i, (name, value) in enumerate(settings.items()):
        params[f"name_{i}"] = name
        params[f"value_{i}"] = value
    return _setup_text(len(settings)), params


def setup_sql(settings: Mapping[str, str]) -> tuple[str, list[str]]:
    """`setup_statement` for the driver: ``SELECT set_config($1, $2, true), ...`` and its
    positional arguments (name, value, name, value, ...)."""
    args: list[str] = []
    for name, value in settings.items():
        args += (name, value)
    return _setup_sql(len(settings)), args


@functools.cache
def _setup_sql(count: int) -> str:
    calls = ", ".join(f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(count))
    return f"SELECT {calls}"


@functools.cache
def _setup_text(count: int) -> TextClause:
    """The statement for `count` settings, built (and its binds parsed) once."""
    calls = ", ".join(f"set_config(:name_{i}, :value_{i}, true)" for i in range(count))
    return text(f"SELECT {calls}")
