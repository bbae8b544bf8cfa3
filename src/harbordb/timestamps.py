"""Timestamps read as the server's text: cheaper to decode than the driver's binary.

asyncpg builds each binary ``timestamp``/``timestamptz`` value through a
``timedelta`` and an addition; parsing the server's ISO text with
``datetime.fromisoformat`` (in C) takes less than half the client CPU per
value, and the server's text output keeps up (benchmarks/README.md,
"Timestamps as text"). The text depends on the session's DateStyle and
TimeZone, which the server reports to the driver as they change: projections
and the repository's driver reads (`harbordb.repository.direct`) read
timestamps as text while DateStyle is ISO and TimeZone is UTC (`text_times`),
and as binary otherwise (another zone's offsets would cost
a conversion per value, more than the binary decode).

`timestamp` returns what asyncpg returns for the same value: ``timestamptz``
values in UTC, naive ``timestamp`` values, asyncpg's stand-ins for the
infinities.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import TIMESTAMP, DateTime
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

PARSE = datetime.fromisoformat
"""What the builders call inline first: right for every finite value in a UTC session.
On what it refuses (None, the infinities, BC), they call `timestamp`."""
# asyncpg's values for 'infinity' and '-infinity', naive for both types.
_INFINITIES = {"infinity": datetime.max, "-infinity": datetime.min}


def timestamp(text: str | None) -> datetime | None:
    """The value of a ``timestamp`` or ``timestamptz`` column the server sent as ISO text."""
    try:
        value = PARSE(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _special(text)
    zone = value.tzinfo
    if zone is None or zone is UTC:  # "+00" parses to the UTC singleton
        return value
    return value.astimezone(UTC)  # only if the zone changed within the statement


def _special(text: str | None) -> datetime | None:
    if text is None:
        return None
    found = _INFINITIES.get(text)
    if found is None:
        # BC dates and years past 9999 (asyncpg fails on them too); the value stays out
        # of the message, as parameters do.
        raise ValueError("a timestamp outside Python's datetime range (years 1 to 9999)")
    return found


# SQLAlchemy's and PostgreSQL's own timestamp classes: not their subclasses, nor a
# TypeDecorator's (whose result processing expects the driver's value).
_PLAIN = (DateTime, TIMESTAMP, postgresql.TIMESTAMP)


def readable_as_text(sql_type: TypeEngine[Any]) -> bool:
    """Whether values of `sql_type` may be selected as text and read by `timestamp`."""
    return type(sql_type) in _PLAIN


# The names PostgreSQL reports for a TimeZone of UTC (any other: binary timestamps).
UTC_ZONES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Universal", "Zulu"})


def text_times(driver_connection: Any) -> bool:
    """Whether to read timestamps as text on `driver_connection` now: its session's
    DateStyle is ISO and its TimeZone UTC (as the server last reported them)."""
    settings = driver_connection.get_settings()
    style = getattr(settings, "DateStyle", None)
    return (
        isinstance(style, str)
        and style.startswith("ISO")
        and getattr(settings, "TimeZone", None) in UTC_ZONES
    )
