"""Settings, read from the environment once and passed in explicitly.

Nothing in harbordb builds an engine at import time: a service constructs
`Settings` (or lets `Database` do it) when it starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
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
    The pool_* and max_overflow fields apply to `pooler="none"` only.

    Waits, in seconds: `pool_timeout` bounds a unit of work's wait for one of
    the ``pool_size + max_overflow`` connections (first come, first served,
    `Unavailable` after it); `connect_timeout` bounds opening a connection
    (the TCP or Unix socket connect and the login, through a pooler too). A
    unit of work's own ``timeout=`` bounds both, and its statements.

    `named_statements` (off by default) prepares each statement once per
    connection, under a name, and runs it in one round trip from then on
    (`check_named_statements`). Behind ``pooler="external"`` it also needs
    `pooler_prepared_statements`: the caller's word that the pooler tracks
    protocol-level prepared statements.
    """

    database_url: str | None = None
    pooler: Pooler = "none"
    application_name: str = "harbordb"
    pool_size: int = 5
    max_overflow: int = 10
    pool_recycle: float = 1800.0
    pool_timeout: float = 30.0
    connect_timeout: float = 10.0
    # A pooled connection idle longer than this is pinged on checkout (0: always).
    pool_ping_after: float = 1.0
    # The N+1 detector's default for every unit of work: "raise", "warn" or None (off).
    nplusone: NPlusOneMode | None = None
    # Public role names a unit of work may assume -> database roles (the allow-list).
    roles: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The setting row-level security policies read the JSON claims from.
    claims_setting: str = "request.jwt.claims"
    # Read replicas (`harbordb.replicas`): URLs, the lag past which one is skipped,
    # how long a read-your-writes read waits for one, how long a failed one rests.
    replica_urls: tuple[str, ...] = ()
    replica_max_lag: float = 5.0
    replica_wait: float = 0.5
    replica_retry_after: float = 1.0
    # Named prepared statements, cached per connection (see `check_named_statements`).
    named_statements: bool = False
    pooler_prepared_statements: bool = False

    def __post_init__(self) -> None:
        check_pooler(self.pooler)
        check_named_statements(self.named_statements, self.pooler, self.pooler_prepared_statements)
        for name in (
            "pool_size",
            "max_overflow",
            "pool_recycle",
            "pool_timeout",
            "pool_ping_after",
            "connect_timeout",
            "replica_max_lag",
            "replica_wait",
            "replica_retry_after",
        ):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.nplusone is not None:
            parse_nplusone_mode(self.nplusone)
        object.__setattr__(self, "roles", MappingProxyType(check_roles(self.roles)))
        check_claims_setting(self.claims_setting)
        object.__setattr__(self, "replica_urls", check_replica_urls(self.replica_urls))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read HARBORDB_DATABASE_URL (else DATABASE_URL), HARBORDB_POOLER, HARBORDB_NPLUSONE,
        HARBORDB_ROLES (``public=database_role,...``), HARBORDB_CLAIMS_SETTING and
        HARBORDB_REPLICA_URLS (separated by commas or spaces), HARBORDB_NAMED_STATEMENTS and
        HARBORDB_POOLER_PREPARED_STATEMENTS (1/true/yes/on or 0/false/no/off)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "database_url": env.get("HARBORDB_DATABASE_URL") or env.get("DATABASE_URL"),
            "pooler": env.get("HARBORDB_POOLER") or "none",
            "nplusone": parse_nplusone_mode(env.get("HARBORDB_NPLUSONE")),
            "roles": parse_roles(env.get("HARBORDB_ROLES") or ""),
            "claims_setting": env.get("HARBORDB_CLAIMS_SETTING") or "request.jwt.claims",
            "replica_urls": tuple(re.split(r"[\s,]+", env.get("HARBORDB_REPLICA_URLS", ""))),
            "named_statements": parse_flag(env, "HARBORDB_NAMED_STATEMENTS"),
            "pooler_prepared_statements": parse_flag(env, "HARBORDB_POOLER_PREPARED_STATEMENTS"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def check_replica_urls(urls: object) -> tuple[str, ...]:
    """Replica URLs as a tuple (each is checked like the primary's when its engine is built)."""
    if isinstance(urls, str):
        urls = (urls,)
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise ConfigurationError("replicas must be a list of database URLs")
    return tuple(url for url in urls if url.strip())


def check_pooler(value: object) -> Pooler:
    if value not in POOLERS:
        raise ConfigurationError(f"pooler must be one of {', '.join(POOLERS)}; got {value!r}")
    return value


def check_named_statements(named: object, pooler: object, pooler_prepared: object) -> None:
    """Named statements are opt-in, and refused behind a pooler not known to track them.

    A transaction pooler that does not track protocol-level prepared statements
    (PgBouncer before 1.21, or with ``max_prepared_statements = 0``) sends a
    statement prepared on one server connection to another that never saw it.
    """
    flags = {"named_statements": named, "pooler_prepared_statements": pooler_prepared}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    if named and pooler == "external" and not pooler_prepared:
        raise ConfigurationError(
            "named_statements=True behind pooler='external' needs a pooler that tracks "
            "protocol-level prepared statements (PgBouncer 1.21+ with max_prepared_statements "
            "above 0, or another pooler that does): PgBouncer 1.18, or max_prepared_statements = "
            "0, runs a statement on a server connection that never prepared it. If yours does, "
            "also set pooler_prepared_statements=True (HARBORDB_POOLER_PREPARED_STATEMENTS=1); "
            "otherwise leave named_statements off"
        )


_FLAGS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False, "": False}  # fmt: skip


def parse_flag(env: Mapping[str, str], name: str) -> bool:
    """An on/off environment variable (unset or empty: off)."""
    value = env.get(name, "").strip().lower()
    if value not in _FLAGS:
        raise ConfigurationError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {value!r}")
    return _FLAGS[value]


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]*"
_CLAIMS_SETTING = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})+")


def check_roles(roles: object) -> dict[str, str]:
    """The roles mapping, checked: non-empty strings both sides."""
    if not isinstance(roles, Mapping):
        raise ConfigurationError("roles must map public role names to database role names")
    checked: dict[str, str] = {}
    for public, database in roles.items():
        if not isinstance(public, str) or not public or not isinstance(database, str):
            raise ConfigurationError("roles must map non-empty names to database role names")
        if not database or "\x00" in database:
            raise ConfigurationError(f"role {public!r}: the database role name is empty or invalid")
        checked[public] = database
    return checked


def parse_roles(text: str) -> dict[str, str]:
    """``"reader=blog_reader, writer=blog_writer"`` -> a roles mapping (HARBORDB_ROLES)."""
    roles: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        public, sep, database = (side.strip() for side in item.partition("="))
        if not sep or not public or not database:
            raise ConfigurationError(
                "HARBORDB_ROLES must read public=database_role[,public=database_role...]"
            )
        roles[public] = database
    return roles


def check_claims_setting(name: object) -> str:
    """A custom setting name PostgreSQL accepts for `set_config`: ``prefix.name``."""
    if not isinstance(name, str) or not _CLAIMS_SETTING.fullmatch(name):
        raise ConfigurationError(
            f"claims_setting must be a dotted custom setting name such as 'request.jwt.claims', "
            f"got {name!r}"
        )
    return name


def migration_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The URL Alembic uses: DDL goes to PostgreSQL directly, not through a pooler."""
    env = os.environ if environ is None else environ
    return (
        env.get("HARBORDB_MIGRATION_URL")
        or env.get("HARBORDB_DATABASE_URL")
        or env.get("DATABASE_URL")
    )
