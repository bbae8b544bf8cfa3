"""Settings, read from the environment once and passed in explicitly.

Nothing in harbordb builds an engine at import time: a service constructs
`Settings` (or lets `Database` do it) when it starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from harbordb.errors import ConfigurationError
from harbordb.nplusone import NPlusOneMode, parse_nplusone_mode

Pooler = Literal["none", "external"]
POOLERS: tuple[Pooler, ...] = ("none", "external")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Connection settings for one `Database`.

    `pooler="external"` means a transaction pooler (PgBouncer, Supavisor) sits
    between the service and PostgreSQL: harbordb then keeps no pool of its own.
    The pool_* fields apply to `pooler="none"` only.
    """

    database_url: str | None = None
    pooler: Pooler = "none"
    application_name: str = "harbordb"
    pool_size: int = 5
    max_overflow: int = 10
    pool_recycle: float = 1800.0
    pool_timeout: float = 30.0
    # A pooled connection idle longer than this is pinged on checkout (0: always).
    pool_ping_after: float = 1.0
    # The N+1 detector's default for every unit of work: "raise", "warn" or None (off).
    nplusone: NPlusOneMode | None = None

    def __post_init__(self) -> None:
        check_pooler(self.pooler)
        for name in (
            "pool_size",
            "max_overflow",
            "pool_recycle",
            "pool_timeout",
            "pool_ping_after",
        ):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.nplusone is not None:
            parse_nplusone_mode(self.nplusone)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read HARBORDB_DATABASE_URL (else DATABASE_URL), HARBORDB_POOLER, HARBORDB_NPLUSONE."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "database_url": env.get("HARBORDB_DATABASE_URL") or env.get("DATABASE_URL"),
            "pooler": env.get("HARBORDB_POOLER") or "none",
            "nplusone": parse_nplusone_mode(env.get("HARBORDB_NPLUSONE")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def check_pooler(value: object) -> Pooler:
    if value not in POOLERS:
        raise ConfigurationError(f"pooler must be one of {', '.join(POOLERS)}; got {value!r}")
    return value


def migration_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The URL Alembic uses: DDL goes to PostgreSQL directly, not through a pooler."""
    env = os.environ if environ is None else environ
    return (
        env.get("HARBORDB_MIGRATION_URL")
        or env.get("HARBORDB_DATABASE_URL")
        or env.get("DATABASE_URL")
    )
