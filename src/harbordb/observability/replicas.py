"""Read-replica metrics through the OpenTelemetry metrics API (`harbordb.replicas`).

| instrument                      | kind      | what                                       |
|---------------------------------|-----------|--------------------------------------------|
| ``harbordb.replicas.lag``       | gauge (s) | each replica's lag as last measured        |
| ``harbordb.replicas.healthy``   | gauge     | 1, or 0 while a replica rests after failing|
| ``harbordb.replicas.reads``     | counter   | read-only units of work a replica served   |
| ``harbordb.replicas.primary``   | counter   | units of work bound to the primary         |
| ``harbordb.replicas.fallbacks`` | counter   | read-only units of work that fell back     |
| ``harbordb.replicas.waits``     | counter   | reads that waited for a token's replay     |

Per-replica points carry ``harbordb.replica`` (its URL, password masked); every
point carries ``harbordb.pool.name``. All are read from `Replicas.status()` when
the metrics are collected: nothing is added to the read path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from harbordb.replicas import Replicas, RoutingStatus

Read = Callable[[RoutingStatus, dict[str, str]], list[Observation]]


class ReplicaMetrics:
    """Reports one `Database`'s replicas; `remove` stops it."""

    def __init__(self, replicas: Replicas, meter: Meter, name: str) -> None:
        self.replicas = replicas
        self.attributes = {"harbordb.pool.name": name}
        self.active = True

        def each(pick: Callable[[object], float | None]) -> Read:
            def read(status: RoutingStatus, base: dict[str, str]) -> list[Observation]:
                return [
                    Observation(value, {**base, "harbordb.replica": replica.url})
                    for replica in status.replicas
                    if (value := pick(replica)) is not None
                ]

            return read

        def total(field: str) -> Read:
            def read(status: RoutingStatus, base: dict[str, str]) -> list[Observation]:
                return [Observation(getattr(status, field), base)]

            return read

        gauges = {
            "harbordb.replicas.lag": ("s", "Replica lag as last measured", each(_lag)),
            "harbordb.replicas.healthy": ("1", "1, or 0 while resting", each(_healthy)),
        }
        counters = {
            "harbordb.replicas.reads": ("Reads each replica served", each(_reads)),
            "harbordb.replicas.primary": ("Units of work on the primary", total("primary")),
            "harbordb.replicas.fallbacks": ("Reads that fell back", total("fallbacks")),
            "harbordb.replicas.waits": ("Reads that waited for a token", total("waits")),
        }
        for metric, (unit, description, read) in gauges.items():
            meter.create_observable_gauge(
                metric, callbacks=[self._observer(read)], unit=unit, description=description
            )
        for metric, (description, read) in counters.items():
            meter.create_observable_counter(
                metric, callbacks=[self._observer(read)], unit="{unit_of_work}",
                description=description,
            )  # fmt: skip

    def remove(self) -> None:
        self.active = False

    def _observer(self, read: Read) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return []
            return read(self.replicas.status(), self.attributes)

        return observe


def _lag(replica: object) -> float | None:
    return getattr(replica, "lag", None)


def _healthy(replica: object) -> float:
    return 1.0 if getattr(replica, "healthy", False) else 0.0


def _reads(replica: object) -> float:
    return float(getattr(replica, "reads", 0))
