"""Refuse, behind a transaction pooler, what it silently breaks, before it reaches the server.

Behind PgBouncer in transaction mode each transaction may run on another
server connection, so session state set in one is gone (or lands on another
client) in the next. Measured through PgBouncer 1.18: a session ``SET`` reached
other clients, ``LISTEN`` lost its notifications without an error, a session
advisory lock stayed on another server connection and its unlock returned
false. With ``pooler="external"`` these raise `PoolerUnsafe` (a
`ConfigurationError`) naming the safe alternative, and never reach the server:

- ``LISTEN`` / ``UNLISTEN`` and asyncpg's ``add_listener``: listen on a direct
  connection to PostgreSQL instead;
- session ``SET`` / ``RESET`` / ``SET SESSION``: use ``SET LOCAL`` (or the unit
  of work's options, or ``set_config(name, value, true)``);
- ``pg_advisory_lock`` / ``pg_try_advisory_lock`` / ``pg_advisory_unlock`` (and
  their ``_shared`` forms, ``pg_advisory_unlock_all``): use
  ``pg_advisory_xact_lock``, released at the end of the transaction;
- startup parameters other than ``application_name`` (URL ``options=`` and
  ``server_settings``): use ``SET LOCAL`` or ``ALTER ROLE ... SET``.

Statement text is matched (comments ahead of the statement skipped); a
statement that only mentions these words in a string literal would be
refused too: bind such values as parameters.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from harbordb.errors import ConfigurationError


class PoolerUnsafe(ConfigurationError):
    """Session state that a transaction pooler would silently drop or leak."""


_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*\n?|/\*.*?\*/)*", re.S)
_SESSION_SET = re.compile(r"(?:SET(?!\s+(?:LOCAL|TRANSACTION|CONSTRAINTS)\b)|RESET)\b", re.I)
_LISTEN = re.compile(r"(?:LISTEN|UNLISTEN)\b", re.I)
_SESSION_LOCK = re.compile(r"\bpg_(?:try_)?advisory_(?:lock|unlock)(?:_shared|_all)?\s*\(", re.I)

_STARTUP_OPTIONS = ("options", "server_settings")


def check_statement(statement: str) -> None:
    """Raise `PoolerUnsafe` if `statement` sets session state a pooler would lose."""
    head = statement[_LEADING_COMMENTS.match(statement).end() :]  # type: ignore[union-attr]
    if _LISTEN.match(head):
        raise PoolerUnsafe(
            "LISTEN behind a transaction pooler loses its notifications silently: "
            "listen on a direct connection to PostgreSQL (pooler='none')"
        )
    if _SESSION_SET.match(head):
        raise PoolerUnsafe(
            "a session SET/RESET behind a transaction pooler leaks to other clients or is "
            "lost: use SET LOCAL inside the transaction, the unit of work's options, or "
            "set_config(name, value, true)"
        )
    if _SESSION_LOCK.search(statement):
        raise PoolerUnsafe(
            "a session advisory lock behind a transaction pooler stays on a server "
            "connection this client may never see again: use pg_advisory_xact_lock "
            "(released at the end of the transaction)"
        )


def before_cursor_execute(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    """SQLAlchemy ``before_cursor_execute`` listener: `check_statement`."""
    check_statement(statement)


def check_startup_options(query: dict[str, Any]) -> None:
    """Refuse URL options that become startup parameters (PgBouncer refuses or drops them)."""
    for key in _STARTUP_OPTIONS:
        if key in query:
            raise PoolerUnsafe(
                f"the URL option {key!r} sends startup parameters, which a transaction pooler "
                "refuses or applies to whichever client comes next: only application_name is "
                "safe; use SET LOCAL (the unit of work's options) or ALTER ROLE ... SET"
            )


class GuardedConnection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, with the listener API refused (behind a transaction pooler)."""

    async def add_listener(self, channel: str, callback: Any) -> None:
        raise PoolerUnsafe(
            "add_listener behind a transaction pooler loses its notifications silently: "
            "listen on a direct connection to PostgreSQL (pooler='none')"
        )
