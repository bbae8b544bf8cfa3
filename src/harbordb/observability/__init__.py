"""Observability for a `Database`: OpenTelemetry traces and pool metrics, slow statements.

Off by default; one switch turns it on. A service calls, once at startup::

    from harbordb.observability import instrument_from_env
    instrument_from_env(db)        # does nothing unless HARBORDB_OTEL=1

or `instrument(db, ...)` with explicit arguments. Then:

- **Traces**: a ``harbordb.unit_of_work`` span per unit of work that runs a
  statement (attributes ``harbordb.read_only``, ``.role`` (the public name),
  ``.isolation_level``, ``.statements``, ``.rows``, ``.retries`` (re-runs
  before this attempt, from `Database.run`), ``.outcome`` (committed /
  rolled_back); error status when a
  statement failed), with one CLIENT span per statement as its children
  (``db.query.text`` with placeholders and quoted literals redacted,
  ``db.response.returned_rows``, on failure ``db.response.status_code`` =
  SQLSTATE). Never claims, never bound values.
- **Metrics**: the pool instruments of `harbordb.observability.pool`, and with
  read replicas those of `harbordb.observability.replicas` (lag, routing counts).
- **Slow statements**: with ``slow_statement_ms`` (``HARBORDB_SLOW_STATEMENT_MS``),
  each statement at least that slow is logged on ``harbordb.slow`` (WARNING):
  duration, the caller's file:line, the unit of work's role, the redacted
  text. This works without OpenTelemetry's SDK, and without HARBORDB_OTEL.

Spans and metrics go to the global tracer and meter providers unless given;
without an SDK configured they cost little and go nowhere. Reads that
projections send on the driver's own connection (`harbordb.projection`)
bypass SQLAlchemy's events: they are counted by `count_queries` but are not
in these spans or the slow log.

Needs the ``otel`` extra (``pip install 'harbordb[otel]'``) for traces and metrics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harbordb.errors import ConfigurationError

SWITCH = "HARBORDB_OTEL"
SLOW_STATEMENT_SETTING = "HARBORDB_SLOW_STATEMENT_MS"
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class Instrumentation:
    """What `instrument` attached to one database; `remove()` detaches it all."""

    observers: list[Any]

    def remove(self) -> None:
        for observer in self.observers:
            observer.remove()
        self.observers.clear()


def instrument(
    db: Any,
    *,
    traces: bool = True,
    metrics: bool = True,
    slow_statement_ms: float | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    pool_name: str | None = None,
) -> Instrumentation:
    """Attach spans, pool metrics and/or the slow-statement log to `db` (a `Database`).

    Call once per database. `pool_name` labels the metrics (default: the
    database's application_name).
    """
    from harbordb.observability.statements import StatementObserver

    if slow_statement_ms is not None and slow_statement_ms < 0:
        raise ConfigurationError("slow_statement_ms must be >= 0")
    engine = db.engine.sync_engine
    observers: list[Any] = []
    tracer = None
    if traces or metrics:
        try:
            from opentelemetry import metrics as otel_metrics
            from opentelemetry import trace
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigurationError(
                "OpenTelemetry is not installed: pip install 'harbordb[otel]'"
            ) from None
        from importlib.metadata import version

        release = version("harbordb")
        if traces:
            tracer = trace.get_tracer("harbordb", release, tracer_provider=tracer_provider)
        if metrics:
            from harbordb.observability.pool import PoolMetrics

            meter = otel_metrics.get_meter("harbordb", release, meter_provider=meter_provider)
            name = pool_name or db.settings.application_name
            # The Database's FIFO admission, where units of work wait for a connection.
            gate = getattr(db, "_gate", None)
            observers.append(PoolMetrics(engine, meter, name, gate))
            if getattr(db, "replicas", None) is not None:
                from harbordb.observability.replicas import ReplicaMetrics

                observers.append(ReplicaMetrics(db.replicas, meter, name))
    if tracer is not None or slow_statement_ms is not None:
        observers.append(
            StatementObserver(engine, tracer=tracer, slow_statement_ms=slow_statement_ms)
        )
    return Instrumentation(observers)


def instrument_from_env(
    db: Any, environ: Mapping[str, str] | None = None, **options: Any
) -> Instrumentation | None:
    """`instrument(db)` when HARBORDB_OTEL is on; the slow log alone when only
    HARBORDB_SLOW_STATEMENT_MS is set; else nothing (None)."""
    env = os.environ if environ is None else environ
    enabled = env.get(SWITCH, "").strip().lower() in _TRUE
    threshold = env.get(SLOW_STATEMENT_SETTING, "").strip()
    slow: float | None = None
    if threshold:
        try:
            slow = float(threshold)
        except ValueError:
            raise ConfigurationError(f"{SLOW_STATEMENT_SETTING} must be milliseconds") from None
    if not enabled and slow is None:
        return None
    return instrument(db, traces=enabled, metrics=enabled, slow_statement_ms=slow, **options)


__all__ = [
    "SLOW_STATEMENT_SETTING",
    "SWITCH",
    "Instrumentation",
    "instrument",
    "instrument_from_env",
]
