"""Run one case: warm-up, statement count, interleaved timed rounds, peak memory.

Method (after asyncpg's pgbench-style runs): every variant first runs once
untimed (the warm-up; its statements are counted and its result size checked
against the other variants). Then come `repeats` rounds; in each round every
variant runs a batch of operations, and the order of variants rotates from
round to round, so drift of a noisy machine hits all of them alike. A batch is
sized from the warm-up to take about `round_seconds`, so quick operations
collect enough samples for p99. Finally each variant runs once more under
tracemalloc for its peak memory; tracemalloc slows Python down, so that run is
never timed.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

from harbordb.bench.core import Case, Lab, Variant
from harbordb.bench.counting import count_statements


class InconsistentVariants(AssertionError):
    """Variants of one case loaded different amounts of data: a bench bug."""


@dataclass
class Measurement:
    variant: str
    concurrency: int
    statements_per_op: float
    rows_per_op: int
    latencies_ns: list[int] = field(default_factory=list)
    elapsed_ns: int = 0  # time spent in timed batches (wall time when concurrent)
    peak_memory_bytes: int | None = None


async def _batch(variant: Variant, operations: int) -> tuple[list[int], int]:
    """Run `operations` operations; return per-operation latencies and elapsed time."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    if variant.concurrency == 1:
        for _ in range(operations):
            start = clock()
            await variant.op()
            latencies.append(clock() - start)
            if variant.reset is not None:
                await variant.reset()
        return latencies, sum(latencies)

    remaining = operations

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = clock()
            await variant.op()
            latencies.append(clock() - start)

    start = clock()
    async with asyncio.TaskGroup() as group:
        for _ in range(variant.concurrency):
            group.create_task(worker())
    return latencies, clock() - start


async def _peak_memory(variant: Variant) -> int:
    """Peak of Python allocations during one operation (or one concurrent batch)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        if variant.concurrency == 1:
            await variant.op()
        else:
            await _batch(variant, variant.concurrency)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if variant.reset is not None:
        await variant.reset()
    return max(0, peak - baseline)


def _batch_size(variant: Variant, warmup_ns: int, lab: Lab) -> int:
    sizes = lab.sizes
    per_op = max(warmup_ns, 1) / 1e9
    operations = int(sizes.round_seconds / per_op)
    if variant.concurrency > 1:
        # Enough operations for every task to run several; the wall clock divides them.
        operations = max(operations * variant.concurrency, 4 * variant.concurrency)
        return min(operations, sizes.max_batch * variant.concurrency)
    return max(1, min(operations, sizes.max_batch))


async def run_case(case: Case, lab: Lab, advance: Callable[[str], None]) -> list[Measurement]:
    """Measure every variant of `case`; `advance(description)` reports progress."""
    results: dict[str, Measurement] = {}
    batches: dict[str, int] = {}
    for variant in case.variants:
        advance(f"{case.label} {variant.key}: warm-up")
        database = variant.database or lab.db
        start = time.perf_counter_ns()
        async with count_statements(database, lab.raw, tortoise=lab.tortoise) as statements:
            if variant.concurrency == 1:
                rows = await variant.op()
                operations = 1
            else:
                operations = variant.concurrency
                rows = await _concurrent_rows(variant, operations)
        elapsed = time.perf_counter_ns() - start
        if variant.reset is not None:
            await variant.reset()
        results[variant.key] = Measurement(
            variant.key, variant.concurrency, len(statements) / operations, rows
        )
        batches[variant.key] = _batch_size(variant, elapsed // operations, lab)
    _check_consistent(case, results)

    count = len(case.variants)
    for round_number in range(lab.sizes.repeats):
        shift = round_number % count
        for variant in case.variants[shift:] + case.variants[:shift]:
            advance(f"{case.label} {variant.key}: round {round_number + 1}")
            gc.collect()
            latencies, elapsed = await _batch(variant, batches[variant.key])
            results[variant.key].latencies_ns.extend(latencies)
            results[variant.key].elapsed_ns += elapsed

    for variant in case.variants:
        advance(f"{case.label} {variant.key}: memory")
        results[variant.key].peak_memory_bytes = await _peak_memory(variant)
    return [results[variant.key] for variant in case.variants]


async def _concurrent_rows(variant: Variant, operations: int) -> int:
    """Rows per operation of a concurrent variant (each operation loads the same)."""
    counts = await asyncio.gather(*(variant.op() for _ in range(operations)))
    if len(set(counts)) != 1:
        raise InconsistentVariants(f"{variant.key}: operations loaded {sorted(set(counts))} rows")
    return counts[0]


def _check_consistent(case: Case, results: dict[str, Measurement]) -> None:
    rows = {key: measurement.rows_per_op for key, measurement in results.items()}
    if len(set(rows.values())) > 1:
        raise InconsistentVariants(f"{case.label}: variants loaded different amounts: {rows}")
