"""Connection-pool metrics through the OpenTelemetry metrics API.

| instrument                         | kind            | what                                   |
|------------------------------------|-----------------|----------------------------------------|
| ``harbordb.pool.size``             | gauge           | the pool's configured size (QueuePool) |
| ``harbordb.pool.checked_out``      | gauge           | connections in use now                 |
| ``harbordb.pool.overflow``         | gauge           | connections above the size (QueuePool) |
| ``harbordb.pool.waiters``          | gauge           | callers waiting for a connection now   |
| ``harbordb.pool.wait_time``        | histogram (s)   | how long each checkout waited          |
| ``harbordb.pool.connects``         | counter         | new server connections opened          |
| ``harbordb.pool.invalidations``    | counter         | connections discarded as broken        |

Every point carries ``harbordb.pool.name``. With ``pooler="external"`` the
engine has no pool of its own (NullPool): size and overflow are not
reported, and every checkout opens a connection to the pooler.

Waiters and wait time are measured where a unit of work waits: at the
`Database`'s FIFO admission (`harbordb.pool.ConnectionGate.acquire`, wrapped
on the instance), which hands out the pool's slots; without one (behind an
external pooler) at the pool's ``_do_get`` (where NullPool connects;
SQLAlchemy is pinned below 2.2), re-applied when `AsyncEngine.dispose`
replaces the pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool, QueuePool

_WRAPPED = "_harbordb_do_get"


class PoolMetrics:
    """Reports one engine's pool; `remove` stops it (instruments then report nothing)."""

    def __init__(self, engine: Engine, meter: Meter, name: str, gate: Any = None) -> None:
        self.engine = engine
        self.gate = gate
        self.attributes = {"harbordb.pool.name": name}
        self.active = True
        self.checked_out = 0
        self.waiters = 0
        self.wait_time = meter.create_histogram(
            "harbordb.pool.wait_time", unit="s", description="How long a checkout waited"
        )
        self.connects = meter.create_counter(
            "harbordb.pool.connects", unit="{connection}", description="Connections opened"
        )
        self.invalidations = meter.create_counter(
            "harbordb.pool.invalidations",
            unit="{connection}",
            description="Connections discarded as broken",
        )
        gauges: dict[str, tuple[str, Callable[[], int | None]]] = {
            "harbordb.pool.size": ("The pool's configured size", self._size),
            "harbordb.pool.checked_out": ("Connections in use", lambda: self.checked_out),
            "harbordb.pool.overflow": ("Connections above the size", self._overflow),
            "harbordb.pool.waiters": ("Callers waiting for a connection", lambda: self.waiters),
        }
        for metric, (description, read) in gauges.items():
            meter.create_observable_gauge(
                metric,
                callbacks=[self._observer(read)],
                unit="{connection}",
                description=description,
            )
        self._listeners: list[tuple[Any, str, Any]] = [
            (engine, "connect", self._on_connect),
            (engine, "checkout", self._on_checkout),
            (engine, "checkin", self._on_checkin),
            (engine, "invalidate", self._on_invalidate),
            (engine, "soft_invalidate", self._on_invalidate),
            (engine, "engine_disposed", self._on_disposed),
        ]
        for target, name_, fn in self._listeners:
            event.listen(target, name_, fn)
        if gate is not None:
            self._wrap_gate(gate)
        else:
            self._wrap(engine.pool)

    def remove(self) -> None:
        self.active = False
        for target, name, fn in self._listeners:
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        if self.gate is not None:
            self.gate.__dict__.pop("acquire", None)
        self._unwrap(self.engine.pool)

    # -- observations -------------------------------------------------------------------

    def _observer(
        self, read: Callable[[], int | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            value = read() if self.active else None
            return [] if value is None else [Observation(value, self.attributes)]

        return observe

    def _size(self) -> int | None:
        pool = self.engine.pool
        return pool.size() if isinstance(pool, QueuePool) else None

    def _overflow(self) -> int | None:
        pool = self.engine.pool
        return max(0, pool.overflow()) if isinstance(pool, QueuePool) else None

    # -- pool events ----------------------------------------------------------------------

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        self.connects.add(1, self.attributes)

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        self.checked_out += 1

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        self.checked_out = max(0, self.checked_out - 1)

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        self.invalidations.add(1, self.attributes)

    def _on_disposed(self, connection: Any) -> None:
        if self.gate is None:
            self._wrap(self.engine.pool)  # dispose() put a new pool in place

    # -- waiting ----------------------------------------------------------------------------

    def _wrap_gate(self, gate: Any) -> None:
        original = gate.acquire

        async def acquire(*args: Any, **kwargs: Any) -> Any:
            self.waiters += 1
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.waiters -= 1
                if self.active:
                    self.wait_time.record(time.perf_counter() - started, self.attributes)

        gate.acquire = acquire

    def _wrap(self, pool: Pool) -> None:
        if _WRAPPED in pool.__dict__:
            return
        original = pool._do_get

        def do_get() -> Any:
            self.waiters += 1
            started = time.perf_counter()
            try:
                return original()
            finally:
                self.waiters -= 1
                if self.active:
                    self.wait_time.record(time.perf_counter() - started, self.attributes)

        pool.__dict__[_WRAPPED] = original
        pool._do_get = do_get  # type: ignore[method-assign]

    def _unwrap(self, pool: Pool) -> None:
        original = pool.__dict__.pop(_WRAPPED, None)
        if original is not None:
            del pool.__dict__["_do_get"]
