"""`named_statements`: off by default, typed, refused behind a pooler not stated to track them."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from sqlalchemy import event

from harbordb import ConfigurationError, Database, Settings
from harbordb.db import STATEMENT_CACHE_SIZE

URL = "postgresql://app@db.invalid/harbor"


def _asyncpg_cache_size(db: Database) -> Any:
    """The statement_cache_size the engine hands asyncpg.connect (its connect_args)."""
    captured: dict[str, Any] = {}

    def capture(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        captured.update(cparams)
        raise _Captured

    event.listen(db.engine.sync_engine, "do_connect", capture)
    with contextlib.suppress(_Captured):
        db.engine.sync_engine.pool._creator()  # type: ignore[attr-defined]
    return captured.get("statement_cache_size")


class _Captured(Exception):
    pass


async def test_off_by_default_both_caches_zero() -> None:
    async with Database(URL, environ={}) as db:
        assert db.settings.named_statements is False
        assert db.engine.url.query["prepared_statement_cache_size"] == "0"
        assert _asyncpg_cache_size(db) == 0
        assert "named_statements" not in repr(db)


@pytest.mark.parametrize("pooler", ["none", "external"])
async def test_on_turns_on_both_caches(pooler: str) -> None:
    extra = {"pooler_prepared_statements": True} if pooler == "external" else {}
    db = Database(URL, pooler=pooler, named_statements=True, environ={}, **extra)  # type: ignore[arg-type]
    async with db:
        assert db.settings.named_statements is True
        assert db.engine.url.query["prepared_statement_cache_size"] == str(STATEMENT_CACHE_SIZE)
        assert _asyncpg_cache_size(db) == STATEMENT_CACHE_SIZE
        assert "named_statements=True" in repr(db)


def test_refused_behind_an_external_pooler_without_the_callers_word() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Database(URL, pooler="external", named_statements=True, environ={})
    message = str(refused.value)
    assert "pooler_prepared_statements=True" in message  # what to set
    assert "max_prepared_statements" in message  # why
    with pytest.raises(ConfigurationError, match="pooler_prepared_statements"):
        Settings(database_url=URL, pooler="external", named_statements=True)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_types_are_checked(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="named_statements must be True or False"):
        Settings(database_url=URL, named_statements=value)
    with pytest.raises(ConfigurationError, match="pooler_prepared_statements must be True"):
        Settings(database_url=URL, pooler_prepared_statements=value)


def test_read_from_the_environment() -> None:
    env = {"HARBORDB_DATABASE_URL": URL, "HARBORDB_NAMED_STATEMENTS": "1"}
    assert Settings.from_env(env).named_statements is True
    assert Settings.from_env({**env, "HARBORDB_NAMED_STATEMENTS": "off"}).named_statements is False
    assert Settings.from_env({"HARBORDB_DATABASE_URL": URL}).named_statements is False
    behind = {**env, "HARBORDB_POOLER": "external"}
    with pytest.raises(ConfigurationError, match="pooler_prepared_statements"):
        Settings.from_env(behind)
    stated = Settings.from_env({**behind, "HARBORDB_POOLER_PREPARED_STATEMENTS": "true"})
    assert stated.named_statements
    assert stated.pooler_prepared_statements
    with pytest.raises(ConfigurationError, match="HARBORDB_NAMED_STATEMENTS must be"):
        Settings.from_env({**env, "HARBORDB_NAMED_STATEMENTS": "maybe"})


async def test_an_argument_wins_over_the_environment() -> None:
    env = {"HARBORDB_NAMED_STATEMENTS": "1"}
    async with Database(URL, named_statements=False, environ=env) as db:
        assert db.settings.named_statements is False


def test_stale_parameter_errors_are_told_by_class() -> None:
    """`harbordb.statements`: asyncpg's own DataError (an argument it could not encode),
    42883 and 42804 mark the caches stale; the server's 22xxx subclasses do not."""
    from asyncpg import exceptions

    from harbordb.statements import stale_parameters

    wrapped = RuntimeError("adapter")
    wrapped.__cause__ = exceptions.DataError("invalid input for query argument $1")
    assert stale_parameters(wrapped)
    assert stale_parameters(exceptions.UndefinedFunctionError())
    assert stale_parameters(exceptions.DatatypeMismatchError())
    assert not stale_parameters(exceptions.InvalidTextRepresentationError())  # 22P02
    assert not stale_parameters(exceptions.DivisionByZeroError())
    assert not stale_parameters(ValueError())
