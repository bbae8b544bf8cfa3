"""Transaction settings: a unit of work's options, checked, as one ``set_config`` statement.

Each setting is applied with ``set_config(name, value, true)``, which is
``SET LOCAL`` in function form: names and values travel as bind parameters,
and everything ends with the transaction (safe behind a transaction pooler).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import TextClause, text

from harbordb.errors import ConfigurationError
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
