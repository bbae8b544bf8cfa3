"""Turn measurements into the result records that the JSON, table and plots share."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.core import Case, Workload
from benchmarks.measure import CaseRun, Measurement

SCHEMA = "harbordb-bench/1"

# Network round-trip times the modelled latency adds per round trip (milliseconds).
MODEL_RTT_MS = (0.5, 1.0)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        raise ValueError("no samples")
    position = (len(sorted_values) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    weight = position - low
    return sorted_values[low] * (1 - weight) + sorted_values[high] * weight


def summarise(measurement: Measurement, unit: str) -> dict[str, Any]:
    ms = sorted(value / 1e6 for value in measurement.latencies_ns)
    operations = len(ms)
    seconds = measurement.elapsed_ns / 1e9
    ops_per_s = operations / seconds if seconds else None
    record: dict[str, Any] = {
        "variant": measurement.variant,
        "concurrency": measurement.concurrency,
        "statements_per_op": round(measurement.statements_per_op, 3),
        "rows_per_op": measurement.rows_per_op,
        "samples": operations,
        "p50_ms": round(percentile(ms, 0.50), 4),
        "p95_ms": round(percentile(ms, 0.95), 4),
        "p99_ms": round(percentile(ms, 0.99), 4),
        "mean_ms": round(sum(ms) / operations, 4),
        "min_ms": round(ms[0], 4),
        "max_ms": round(ms[-1], 4),
        "ops_per_s": round(ops_per_s, 2) if ops_per_s else None,
        "peak_memory_kib": round(measurement.peak_memory_bytes / 1024, 1),
    }
    # Each round's p50, in round order: ratios between variants taken round by round
    # (`round_ratio`) resist the drift of a shared machine better than pooled p50s.
    record["round_p50_ms"] = [round(value / 1e6, 4) for value in measurement.round_p50_ns]
    # Client CPU (the event loop thread's user + system time) per operation: the median over
    # rounds, and each round's, in order.
    if measurement.round_cpu_ns:
        record["cpu_us_per_op"] = round(statistics.median(measurement.round_cpu_ns) / 1e3, 2)
        record["round_cpu_us"] = [round(value / 1e3, 2) for value in measurement.round_cpu_ns]
    trips = measurement.round_trips_per_op
    if trips is not None:
        # A model, not a measurement: this run's p50 plus one network delay per round trip.
        record["round_trips_per_op"] = round(trips, 3)
        for rtt_ms in MODEL_RTT_MS:
            record[f"model_p50_ms_at_{rtt_ms:g}ms_rtt"] = round(
                record["p50_ms"] + trips * rtt_ms, 4
            )
    if unit == "row" and ops_per_s:
        record["rows_per_s"] = round(ops_per_s * measurement.rows_per_op, 1)
    return record


def case_record(workload: Workload, case: Case, run: CaseRun) -> dict[str, Any]:
    variants = [summarise(m, workload.unit) for m in run.measurements]
    floor = next((v for v in variants if v["variant"] == workload.floor), None)
    for record in variants:
        record["ratio_to_floor"] = (
            round(record["p50_ms"] / floor["p50_ms"], 3) if floor and floor["p50_ms"] else None
        )
        cpu, floor_cpu = record.get("cpu_us_per_op"), floor and floor.get("cpu_us_per_op")
        record["cpu_ratio_to_floor"] = round(cpu / floor_cpu, 3) if cpu and floor_cpu else None
    return {
        "label": case.label,
        "params": case.params,
        "rounds": run.rounds,
        "variants": variants,
        "skipped": [{"variant": key, "reason": why} for key, why in case.skipped.items()],
    }


def workload_record(workload: Workload, cases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "key": workload.key,
        "title": workload.title,
        "description": workload.description,
        "unit": workload.unit,
        "floor": workload.floor,
        "scaling": workload.scaling,
        "cases": cases,
    }


def write_json(run: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2, sort_keys=False) + "\n")


def round_ratio(
    subject: dict[str, Any], anchor: dict[str, Any], field: str = "round_p50_ms"
) -> float | None:
    """The median over rounds of subject's p50 / anchor's p50 in the same round (or of
    another per-round figure: ``field="round_cpu_us"``, client CPU per op)."""
    pairs = zip(subject.get(field, ()), anchor.get(field, ()), strict=False)
    ratios: list[float] = sorted(mine / theirs for mine, theirs in pairs if theirs)
    if not ratios:
        return None
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


def variant_in(case: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((v for v in case["variants"] if v["variant"] == key), None)
