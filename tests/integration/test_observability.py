"""harbordb.observability against the real database (the library's roles), directly and
through PgBouncer: spans per unit of work and statement (OpenTelemetry SDK, in-memory
exporter), the slow-statement log, and pool metrics (in-memory metric reader)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import text

from harbordb import Database, DatabaseError, Retryable
from harbordb.observability import instrument, instrument_from_env
from harbordb.testing.cluster import PgBouncer

CLAIM = "claim-value-4711"
BOUND = "bound-value-0815"
LITERAL = "literal-value-2342"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(db: Database, exporter: InMemorySpanExporter) -> Iterator[Database]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation = instrument(db, metrics=False, tracer_provider=provider)
    yield db
    instrumentation.remove()


def units_of_work(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "harbordb.unit_of_work"]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def assert_no_values(exporter: InMemorySpanExporter) -> None:
    for span in exporter.get_finished_spans():
        dump = repr(dict(span.attributes or {})) + repr(span.status.description)
        for value in (CLAIM, BOUND, LITERAL):
            assert value not in dump, span.name


async def test_a_span_per_unit_of_work_with_statement_children(
    traced: Database, exporter: InMemorySpanExporter
) -> None:
    async with traced.unit_of_work(read_only=True, role="reader", claims={"sub": CLAIM}) as uow:
        await uow.session.execute(text("SELECT :v"), {"v": BOUND})
        await uow.session.execute(text(f"SELECT '{LITERAL}', 2 UNION ALL SELECT 'x', 3"))
    (span,) = units_of_work(exporter)
    attributes = dict(span.attributes or {})
    assert attributes["harbordb.read_only"] is True
    assert attributes["harbordb.role"] == "reader"
    assert attributes["harbordb.isolation_level"] == "default"
    assert attributes["harbordb.retries"] == 0
    assert attributes["harbordb.statements"] == 3  # the settings, then two
    assert attributes["harbordb.rows"] == 4
    assert attributes["harbordb.outcome"] == "rolled_back"
    assert span.status.status_code is StatusCode.UNSET
    statements = children(exporter, span)
    assert [s.name for s in statements] == ["SELECT"] * 3
    assert [s.attributes["db.response.returned_rows"] for s in statements] == [1, 1, 2]  # type: ignore[index]
    assert "'?'" in str(statements[2].attributes["db.query.text"])  # type: ignore[index]
    assert_no_values(exporter)

    exporter.clear()
    async with traced.unit_of_work(isolation_level="SERIALIZABLE") as uow:
        await uow.session.execute(text("SELECT 1"))
        await uow.commit()
    (span,) = units_of_work(exporter)
    assert span.attributes is not None
    assert (span.attributes["harbordb.outcome"], span.attributes["harbordb.read_only"]) == (
        "committed",
        False,
    )
    assert span.attributes["harbordb.isolation_level"] == "SERIALIZABLE"
    assert span.attributes["harbordb.role"] == ""


async def test_a_failed_statement_marks_both_spans_without_its_message(
    traced: Database, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(DatabaseError):
        async with traced.unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1 / (length(:v) - length(:v))"), {"v": BOUND})
    (span,) = units_of_work(exporter)
    assert span.status.status_code is StatusCode.ERROR
    (statement,) = children(exporter, span)
    assert statement.status.status_code is StatusCode.ERROR
    assert statement.attributes is not None
    assert statement.attributes["db.response.status_code"] == "22012"  # division by zero
    assert_no_values(exporter)


async def test_retried_attempts_are_numbered(
    traced: Database, exporter: InMemorySpanExporter
) -> None:
    attempts = 0

    async def work(uow: Any) -> None:
        nonlocal attempts
        attempts += 1
        await uow.session.execute(text("SELECT 1"))
        if attempts < 3:
            raise Retryable("transaction conflict (SQLSTATE 40001)", sqlstate="40001")

    await traced.run(work, retries=3)
    spans = units_of_work(exporter)
    assert [s.attributes["harbordb.retries"] for s in spans] == [0, 1, 2]  # type: ignore[index]
    assert [s.attributes["harbordb.outcome"] for s in spans] == [  # type: ignore[index]
        "rolled_back",
        "rolled_back",
        "committed",
    ]


async def test_off_by_default_and_removable(db: Database, exporter: InMemorySpanExporter) -> None:
    assert instrument_from_env(db, environ={}) is None
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    on = instrument_from_env(db, environ={"HARBORDB_OTEL": "1"}, tracer_provider=provider)
    assert on is not None
    async with db.unit_of_work(read_only=True) as uow:
        await uow.session.execute(text("SELECT 1"))
    assert len(units_of_work(exporter)) == 1
    on.remove()
    async with db.unit_of_work(read_only=True) as uow:
        await uow.session.execute(text("SELECT 1"))
    assert len(units_of_work(exporter)) == 1


async def test_slow_statements_are_logged_with_caller_and_role(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="harbordb.slow")
    slow = instrument(db, traces=False, metrics=False, slow_statement_ms=50)
    try:
        async with db.unit_of_work(read_only=True, role="reader", claims={"sub": CLAIM}) as uow:
            await uow.session.execute(
                text(f"SELECT pg_sleep(0.06), '{LITERAL}', :v"), {"v": BOUND}
            )  # the line the log names
    finally:
        slow.remove()
    records = [r for r in caplog.records if "pg_sleep" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "test_observability.py:" in message
    assert "(role reader)" in message
    assert records[0].harbordb_duration_ms >= 50  # type: ignore[attr-defined]
    for value in (CLAIM, BOUND, LITERAL):
        assert value not in message

    caplog.clear()
    quiet = instrument_from_env(db, environ={"HARBORDB_SLOW_STATEMENT_MS": "60000"})
    assert quiet is not None
    try:
        async with db.unit_of_work(read_only=True) as uow:
            await uow.session.execute(text("SELECT pg_sleep(0.06)"))
    finally:
        quiet.remove()
    assert not [r for r in caplog.records if r.name == "harbordb.slow"]


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def _value(reader: InMemoryMetricReader, name: str) -> Any:
    points = _points(reader).get(name, [])
    return points[-1].value if points else None


async def test_pool_metrics(migrated_url: str) -> None:
    reader = InMemoryMetricReader()
    async with Database(migrated_url, pool_size=1, max_overflow=1, pool_timeout=30) as db:
        metrics = instrument(
            db, traces=False, meter_provider=MeterProvider(metric_readers=[reader]), pool_name="t"
        )
        release = asyncio.Event()
        holding = 0

        async def hold() -> None:
            nonlocal holding
            async with db.unit_of_work(read_only=True) as uow:
                await uow.session.execute(text("SELECT 1"))
                holding += 1
                await release.wait()

        async with asyncio.TaskGroup() as tasks:
            for _ in range(3):
                tasks.create_task(hold())
            for _ in range(3000):  # until two hold a connection and the third waits
                if holding == 2 and _value(reader, "harbordb.pool.waiters") == 1:
                    break
                await asyncio.sleep(0.01)
            assert _value(reader, "harbordb.pool.checked_out") == 2
            assert _value(reader, "harbordb.pool.overflow") == 1
            assert _value(reader, "harbordb.pool.size") == 1
            release.set()
        points = _points(reader)
        assert points["harbordb.pool.wait_time"][-1].count == 3
        assert points["harbordb.pool.connects"][-1].value == 2
        assert points["harbordb.pool.connects"][-1].attributes == {"harbordb.pool.name": "t"}
        assert _value(reader, "harbordb.pool.waiters") == 0
        assert _value(reader, "harbordb.pool.checked_out") == 0

        async with db.engine.connect() as connection:
            await connection.invalidate()
        assert _value(reader, "harbordb.pool.invalidations") == 1
        await db.engine.dispose()  # a new pool: still measured
        async with db.unit_of_work(read_only=True) as uow:
            await uow.session.execute(text("SELECT 1"))
        # Waits are measured at the Database's admission: units of work, not engine.connect().
        assert _points(reader)["harbordb.pool.wait_time"][-1].count == 4
        metrics.remove()
        assert _value(reader, "harbordb.pool.checked_out") is None


@pytest.mark.pgbouncer
async def test_pool_metrics_behind_a_pooler(pgbouncer: PgBouncer) -> None:
    """No pool of harbordb's own (NullPool): every unit of work connects; no size, no overflow."""
    reader = InMemoryMetricReader()
    async with Database(pgbouncer.url, pooler="external") as db:
        metrics = instrument(
            db, traces=False, meter_provider=MeterProvider(metric_readers=[reader]), pool_name="p"
        )
        for _ in range(2):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.session.execute(text("SELECT 1"))
                assert _value(reader, "harbordb.pool.checked_out") == 1
        points = _points(reader)
        assert points["harbordb.pool.connects"][-1].value == 2
        assert points["harbordb.pool.wait_time"][-1].count == 2  # each checkout's connect
        assert _value(reader, "harbordb.pool.checked_out") == 0
        assert "harbordb.pool.size" not in points
        assert "harbordb.pool.overflow" not in points
        metrics.remove()
