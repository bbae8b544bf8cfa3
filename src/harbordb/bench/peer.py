"""Tortoise ORM, the peer: initialised on the same database when it is installed."""

from __future__ import annotations

from contextlib import AsyncExitStack

from sqlalchemy import make_url

from harbordb.db import normalize_url

NOT_INSTALLED = (
    "Tortoise ORM is not installed, so the peer rows are missing from W2 and W3 "
    "(pip install 'harbordb[bench]')"
)


def installed() -> bool:
    try:
        import tortoise  # noqa: F401
    except ImportError:
        return False
    return True


async def start(url: str, stack: AsyncExitStack, notes: list[str]) -> bool:
    """Initialise Tortoise on `url`; close it when `stack` closes. False when not installed."""
    if not installed():
        notes.append(NOT_INSTALLED + ".")
        return False
    from tortoise import Tortoise

    parsed = make_url(normalize_url(url).render_as_string(hide_password=False))
    credentials = {
        "host": parsed.query.get("host") or parsed.host or "localhost",
        "port": int(parsed.query.get("port") or parsed.port or 5432),  # type: ignore[arg-type]
        "user": parsed.username or "postgres",
        "password": parsed.password or "",
        "database": parsed.database,
        # The same settings harbordb runs with: no statement cache (pooler-safe).
        "statement_cache_size": 0,
        "minsize": 1,
        "maxsize": 1,
    }
    await Tortoise.init(
        config={
            "connections": {
                "default": {"engine": "tortoise.backends.asyncpg", "credentials": credentials}
            },
            "apps": {"bench": {"models": ["harbordb.bench.tortoise_models"]}},
        }
    )
    stack.push_async_callback(Tortoise.close_connections)
    return True
