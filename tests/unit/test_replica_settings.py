"""Replica settings and read-your-writes tokens, checked before anything connects."""

from __future__ import annotations

import pytest

from harbordb import ConfigurationError, Database, InvalidReadToken, Settings
from harbordb.replicas import format_token, parse_token, wal_end

PRIMARY = "postgresql://app@db.internal/shop"
REPLICA = "postgresql://app@replica-1.internal/shop"


@pytest.mark.parametrize("lsn", [0, 1, 0x3016A28, (0x16 << 32) | 0xB374D848, 2**64 - 1])
def test_a_token_is_the_wal_position_and_reads_back(lsn: int) -> None:
    token = format_token(lsn)
    assert parse_token(token) == lsn
    assert len(token) <= 17


def test_a_token_is_spelled_as_postgres_spells_a_wal_position() -> None:
    assert format_token((0x16 << 32) | 0xB374D848) == "16/B374D848"
    assert parse_token("0/3016a28") == 0x3016A28


@pytest.mark.parametrize(
    "token", ["", "0", "0/", "/1", "0/3016A28; DROP", "123456789/0", "g/1", " 0/1", 7]
)
def test_a_malformed_token_is_refused_before_any_sql(token: object) -> None:
    with pytest.raises(InvalidReadToken):
        parse_token(token)  # type: ignore[arg-type]
    db = Database(PRIMARY)
    with pytest.raises(InvalidReadToken):
        db.unit_of_work(read_only=True, after=token)  # type: ignore[arg-type]


def test_replica_urls_come_from_the_environment() -> None:
    settings = Settings.from_env({"HARBORDB_REPLICA_URLS": f" {REPLICA}, {REPLICA}2 "})
    assert settings.replica_urls == (REPLICA, f"{REPLICA}2")
    assert Settings.from_env({}).replica_urls == ()


def test_database_builds_one_engine_per_replica_with_the_primarys_rules() -> None:
    db = Database(PRIMARY, replicas=[REPLICA], pooler="external", replica_max_lag=2)
    assert db.replicas is not None
    status = db.replicas.status()
    assert [r.url for r in status.replicas] == [
        "postgresql+asyncpg://app@replica-1.internal/shop?prepared_statement_cache_size=0"
    ]
    assert db.replicas.max_lag == 2.0
    assert Database(PRIMARY).replicas is None


@pytest.mark.parametrize(
    "options",
    [
        {"replicas": ["mysql://x@y/z"]},
        {"replicas": ["postgresql://x@y"]},  # no database
        {"replicas": [3]},
        {"replicas": [REPLICA], "replica_max_lag": -1},
        {"replicas": [REPLICA], "replica_wait": -0.5},
    ],
)
def test_bad_replica_settings_are_configuration_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Database(PRIMARY, **options)  # type: ignore[arg-type]


def test_a_replica_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Database(PRIMARY, replicas=["mysql://app:s3cret@replica/shop"])
    assert "s3cret" not in str(caught.value)


PAGE, SEGMENT = 8192, 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("insert", "end"),
    [
        (0x3016A28, 0x3016A28),  # inside a page: the end of the last record
        (0x3016018, 0x3016000),  # just past a page header: the page boundary
        (0x3000028, 0x3000000),  # just past a segment's long header: the boundary
        (0x3002028, 0x3002028),  # 40 bytes into an ordinary page: a record's end
        (0x3000018, 0x3000018),  # inside a long header: no insert position, left alone
    ],
)
def test_the_insert_position_at_a_page_boundary_reads_as_the_boundary(
    insert: int, end: int
) -> None:
    """A standby that replayed everything reports the boundary, never the spot past the
    next page's header: a token there would wait for WAL that an idle primary never sends."""
    assert wal_end(insert, PAGE, SEGMENT) == end
