"""The run as Markdown tables (written next to the JSON, for benchmarks/README.md)."""

from __future__ import annotations

from typing import Any


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def workload_table(workload: dict[str, Any]) -> str:
    rate = "rows/s" if workload["unit"] == "row" else "ops/s"
    floor = workload["floor"] or "floor"
    lines = [
        f"**{workload['key']}: {workload['title']}**",
        "",
        f"| case | variant | statements/op | round trips/op | p50 ms | p95 ms | p99 ms "
        f"| CPU us/op | {rate} | peak KiB | x {floor} | CPU x {floor} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in workload["cases"]:
        for index, record in enumerate(case["variants"]):
            throughput = record.get("rows_per_s" if workload["unit"] == "row" else "ops_per_s")
            ratio = record["ratio_to_floor"]
            cpu_ratio = record.get("cpu_ratio_to_floor")
            trips = record.get("round_trips_per_op")
            cpu = record.get("cpu_us_per_op")
            lines.append(
                "| "
                + " | ".join(
                    [
                        case["label"] if index == 0 else "",
                        f"`{record['variant']}`",
                        f"{record['statements_per_op']:g}",
                        "-" if trips is None else f"{trips:g}",
                        _ms(record["p50_ms"]),
                        _ms(record["p95_ms"]),
                        _ms(record["p99_ms"]),
                        "-" if cpu is None else f"{cpu:,.0f}",
                        "-" if throughput is None else f"{throughput:,.0f}",
                        f"{record['peak_memory_kib']:,.0f}",
                        "-" if ratio is None else f"{ratio:.2f}",
                        "-" if cpu_ratio is None else f"{cpu_ratio:.2f}",
                    ]
                )
                + " |"
            )
        for skipped in case["skipped"]:
            lines.append(
                f"| | `{skipped['variant']}` | skipped: {skipped['reason']} | | | | | | | | | |"
            )
    return "\n".join(lines)


def render(run: dict[str, Any]) -> str:
    env = run["environment"]
    libraries = ", ".join(
        f"{name} {version}" for name, version in env["libraries"].items() if version
    )
    parts = [
        f"Run of {run['started_at']} ({run['mode']}, {run['duration_s']} s): "
        f"{env['cpu']} x{env['cpus_usable']}, {env['python']}, PostgreSQL {env['postgresql']} "
        f"({env['server']}{', through PgBouncer' if env['via_pgbouncer'] else ''}), "
        f"{env['pgbouncer'] or 'no PgBouncer'}; {libraries}.",
    ]
    parts += [workload_table(workload) for workload in run["workloads"].values()]
    if run["goals"]:
        goals = ["| goal | measured | status |", "|---|---|---|"]
        goals += [f"| {g['goal']} | {g['measured']} | {g['status']} |" for g in run["goals"]]
        parts.append("\n".join(goals))
    parts += [f"Note: {note}" for note in run["notes"]]
    return "\n\n".join(parts) + "\n"
