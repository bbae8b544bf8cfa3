"""Run one case: warm-up, one instrumented operation, then interleaved timed rounds.

Method (after asyncpg's pgbench-style runs):

1. Warm-up: on a workload's first case, every variant runs once untimed, so
   first-use costs (SQLAlchemy compiling a statement, asyncpg introspecting a
   type) are not measured. Later cases reuse the same statements.
2. Instrumented run: every variant runs once more, untimed, with its
   statements counted and tracemalloc tracing its peak memory (tracemalloc
   slows Python down, hence untimed). The amount of data it loaded must equal
   every other variant's: no variant can win by doing less.
3. Rounds: in each round every variant runs a batch of operations for about
   `round_seconds` (at least one), and the order of variants rotates by one
   from round to round, so drift of a noisy machine hits all of them alike.
   Concurrent variants run `concurrency` tasks until the batch's time is up.
   After `repeats` rounds, or earlier (never before `MIN_ROUNDS`) when the
   next round would overrun the case's time budget, the case ends.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.core import Case, Lab, Variant
from benchmarks.counting import count_round_trips, count_statements
from benchmarks.psycopg_peer import count_wire

MIN_ROUNDS = 3
_clock = time.perf_counter_ns
# Client CPU per op: the CPU time (user + system) of this thread, which runs the event
# loop and every driver call; not the process's, which would count the console's
# progress-bar thread, nor the server's.
_cpu = time.thread_time_ns


class InconsistentVariants(AssertionError):
    """Variants of one case loaded different amounts of data: a bench bug."""


@dataclass
class Measurement:
    variant: str
    concurrency: int
    statements_per_op: float
    rows_per_op: int
    peak_memory_bytes: int
    round_trips_per_op: float | None = None  # from the wire protocol (`count_round_trips`)
    latencies_ns: list[int] = field(default_factory=list)
    round_p50_ns: list[float] = field(default_factory=list)  # each round's median, in order
    round_cpu_ns: list[float] = field(default_factory=list)  # each round's client CPU per op
    elapsed_ns: int = 0  # time spent in timed batches (wall time when concurrent)


@dataclass
class CaseRun:
    measurements: list[Measurement]
    rounds: int


@dataclass
class Batch:
    latencies: list[int]  # per operation, ns
    elapsed: int  # the batch's time (wall time when concurrent), ns
    cpu: int  # the event loop thread's CPU time over the operations (resets excluded), ns


async def _sequential(variant: Variant, seconds: float, limit: int) -> Batch:
    latencies: list[int] = []
    budget = int(seconds * 1e9)
    spent = cpu = 0
    while not latencies or (spent < budget and len(latencies) < limit):
        start_cpu = _cpu()
        start = _clock()
        await variant.op()
        latency = _clock() - start
        cpu += _cpu() - start_cpu
        latencies.append(latency)
        spent += latency
        if variant.reset is not None:
            await variant.reset()
    return Batch(latencies, spent, cpu)


async def _concurrent(variant: Variant, seconds: float, limit: int) -> Batch:
    """`concurrency` tasks each run operations until the time is up (at least one each)."""
    latencies: list[int] = []
    deadline = _clock() + int(seconds * 1e9)

    async def worker() -> None:
        first = True
        while first or (_clock() < deadline and len(latencies) < limit):
            first = False
            start = _clock()
            await variant.op()
            latencies.append(_clock() - start)

    start, start_cpu = _clock(), _cpu()
    async with asyncio.TaskGroup() as group:
        for _ in range(variant.concurrency):
            group.create_task(worker())
    return Batch(latencies, _clock() - start, _cpu() - start_cpu)


async def timed_batch(variant: Variant, seconds: float, limit: int) -> Batch:
    """Per-operation latencies, the batch's elapsed time and its client CPU time."""
    if variant.concurrency == 1:
        return await _sequential(variant, seconds, limit)
    return await _concurrent(variant, seconds, limit * variant.concurrency)


async def _operations(variant: Variant) -> list[int]:
    """One operation, or one per task for a concurrent variant; what each loaded."""
    if variant.concurrency == 1:
        return [await variant.op()]
    return list(await asyncio.gather(*(variant.op() for _ in range(variant.concurrency))))


async def driver_floor_kib(raw: Any) -> float:
    """The tracemalloc peak of ``SELECT 1`` on raw asyncpg: what any read allocates
    around its rows (asyncio's 256 KiB receive buffer, allocated per socket read)."""
    await raw.fetch("SELECT 1")
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        await raw.fetch("SELECT 1")
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    return round(max(peak, 0) / 1024, 1)


async def _instrumented(variant: Variant, lab: Lab) -> Measurement:
    database = variant.database or lab.db
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        raw = lab.raw if variant.raw is None else variant.raw
        async with count_statements(database, raw, tortoise=lab.tortoise) as statements:
            with count_round_trips() as trips, count_wire(lab.psycopg) as psycopg:
                rows = await _operations(variant)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    if variant.reset is not None:
        await variant.reset()
    if len(set(rows)) != 1:
        raise InconsistentVariants(f"{variant.key}: operations loaded {sorted(set(rows))} rows")
    # psycopg's libpq writes past both counters: its trace counts it (`psycopg_wire`).
    per_op = (len(statements) + psycopg.statements) / len(rows) + variant.hidden_statements
    round_trips = (trips[0] + psycopg.round_trips) / len(rows)
    return Measurement(variant.key, variant.concurrency, per_op, rows[0], max(peak, 0), round_trips)


async def run_case(
    case: Case, lab: Lab, advance: Callable[[str], None], *, warm_up: bool
) -> CaseRun:
    """Measure every variant of `case`; `advance(description)` reports each step."""
    sizes = lab.sizes
    for variant in case.variants:
        if warm_up or variant.prime:
            advance(f"{case.label} {variant.key}: warm-up")
            await _operations(variant)
            if variant.reset is not None:
                await variant.reset()
    results: dict[str, Measurement] = {}
    for variant in case.variants:
        advance(f"{case.label} {variant.key}: statements, memory")
        results[variant.key] = await _instrumented(variant, lab)
    rows = {key: measurement.rows_per_op for key, measurement in results.items()}
    if len(set(rows.values())) > 1:
        raise InconsistentVariants(f"{case.label}: variants loaded different amounts: {rows}")

    started = _clock()
    rounds = 0
    while rounds < sizes.repeats:
        shift = rounds % len(case.variants)
        for variant in case.variants[shift:] + case.variants[:shift]:
            advance(f"{case.label} {variant.key}: round {rounds + 1}")
            gc.collect()
            batch = await timed_batch(variant, sizes.round_seconds, sizes.max_batch)
            measured = results[variant.key]
            measured.latencies_ns.extend(batch.latencies)
            measured.round_p50_ns.append(statistics.median(batch.latencies))
            measured.round_cpu_ns.append(batch.cpu / len(batch.latencies))
            measured.elapsed_ns += batch.elapsed
        rounds += 1
        spent = (_clock() - started) / 1e9
        if (
            sizes.case_seconds
            and rounds >= MIN_ROUNDS
            and spent * (rounds + 1) / rounds > (sizes.case_seconds)
        ):
            break
    for _ in range((sizes.repeats - rounds) * len(case.variants)):
        advance(f"{case.label}: time budget reached after {rounds} rounds")
    return CaseRun([results[variant.key] for variant in case.variants], rounds)


def steps(case: Case, lab: Lab, *, warm_up: bool) -> int:
    """How many times `run_case` calls `advance` for `case`."""
    return len(case.variants) * (lab.sizes.repeats + 1 + int(warm_up))
