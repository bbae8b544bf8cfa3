"""Where the plugin keeps its servers' files."""

from __future__ import annotations

from pathlib import Path

import pytest

from harbordb.testing.cluster import PostgresCluster


def test_the_cluster_lives_outside_pytests_temporary_root(
    pg_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Any pytest run of the same user resets that root to 0700, which would lock the
    server's own system user out of its data directory (PostgreSQL then shuts down)."""
    if pg_cluster.socket_dir is None:
        pytest.skip("HARBORDB_TEST_DATABASE_URL: a server the plugin did not start")
    pytest_root = tmp_path_factory.getbasetemp().parent
    assert not Path(pg_cluster.socket_dir).resolve().is_relative_to(pytest_root.resolve())
