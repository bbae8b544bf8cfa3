"""URL normalisation and settings, without a database."""

from __future__ import annotations

import pytest

from harbordb import ConfigurationError, Database, Settings, normalize_url
from harbordb.db import safe_url

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://app@db/harbor", "postgresql+asyncpg://app@db/harbor"),
        ("postgresql://app@db:6432/harbor", "postgresql+asyncpg://app@db:6432/harbor"),
        ("postgresql+asyncpg://app@db/harbor", "postgresql+asyncpg://app@db/harbor"),
        ("postgresql://app@/harbor?host=/run/pg", "postgresql+asyncpg://app@/harbor?host=%2Frun%2Fpg"),
        ("postgresql://app@db/harbor?sslmode=require", "postgresql+asyncpg://app@db/harbor?ssl=require"),
        ("postgresql://app@db/harbor?sslmode=verify-full", "postgresql+asyncpg://app@db/harbor?ssl=verify-full"),
    ],
)  # fmt: skip
def test_urls_are_normalised_to_asyncpg(raw: str, expected: str) -> None:
    url = normalize_url(raw)
    assert url.drivername == "postgresql+asyncpg"
    assert url.query["prepared_statement_cache_size"] == "0"
    assert "sslmode" not in url.query
    without_cache = url.difference_update_query(["prepared_statement_cache_size"])
    assert without_cache.render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not a url", "malformed"),
        (f"postgresql://app:{SECRET}@db:notaport/harbor", "malformed"),
        (f"mysql://app:{SECRET}@db/harbor", "'mysql' is not supported"),
        ("sqlite:///harbor.db", "'sqlite' is not supported"),
        (f"postgresql+psycopg://app:{SECRET}@db/harbor", r"'postgresql\+psycopg' is not supported"),
        (f"postgresql://app:{SECRET}@db", "names no database"),
        (f"postgresql://app:{SECRET}@db/harbor?sslmode=bogus", "sslmode 'bogus'"),
    ],
)  # fmt: skip
def test_bad_urls_raise_clear_errors_without_the_password(raw: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        normalize_url(raw)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None or SECRET not in str(caught.value.__cause__)
    assert isinstance(caught.value, ValueError)


async def test_database_repr_and_safe_url_hide_the_password() -> None:
    db = Database(f"postgresql://app:{SECRET}@db.invalid/harbor")
    try:
        assert SECRET not in repr(db)
        assert SECRET not in safe_url(db.engine.url)
        assert "***" in repr(db)
    finally:
        await db.dispose()


def test_settings_from_env_prefers_harbordb_variables() -> None:
    env = {
        "DATABASE_URL": "postgresql://fallback@db/one",
        "HARBORDB_DATABASE_URL": "postgresql://primary@db/two",
        "HARBORDB_POOLER": "external",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql://primary@db/two"
    assert settings.pooler == "external"
    assert Settings.from_env({"DATABASE_URL": "postgresql://fb@db/x"}).database_url.endswith("/x")


@pytest.mark.parametrize("env", [{"HARBORDB_POOLER": "pgbouncer"}, {"HARBORDB_POOLER": "yes"}])
def test_unknown_pooler_is_rejected(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="pooler must be one of none, external"):
        Settings.from_env(env)


def test_missing_url_names_the_variables() -> None:
    with pytest.raises(ConfigurationError, match="HARBORDB_DATABASE_URL"):
        Database(environ={})


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="pool_sise"):
        Database("postgresql://app@db/harbor", pool_sise=3)


@pytest.mark.parametrize(
    ("pooler", "pool_class"), [("none", "AsyncAdaptedQueuePool"), ("external", "NullPool")]
)
async def test_pool_follows_the_pooler(pooler: str, pool_class: str) -> None:
    async with Database("postgresql://app@db.invalid/harbor", pooler=pooler, pool_size=3) as db:  # type: ignore[arg-type]
        assert type(db.engine.pool).__name__ == pool_class
        if pooler == "none":
            assert db.engine.pool.size() == 3  # type: ignore[attr-defined]


def test_every_settings_field_is_a_database_option() -> None:
    """Keyword options are `Settings` fields: none is forgotten when a field is added."""
    db = Database(
        "postgresql://app@db/harbor", nplusone="raise", pool_ping_after=0.5, application_name="x"
    )
    assert (db.settings.nplusone, db.settings.pool_ping_after) == ("raise", 0.5)
    assert db.settings.application_name == "x"
    with pytest.raises(ConfigurationError, match="database_url"):
        Database("postgresql://app@db/harbor", database_url="postgresql://app@db/other")
