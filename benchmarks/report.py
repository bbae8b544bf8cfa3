"""The console report: one rich table per workload, then notes and goals."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchmarks.core import VARIANT_LABELS


def _number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def workload_table(workload: dict[str, Any]) -> Table:
    rate = "rows/s" if workload["unit"] == "row" else "ops/s"
    floor = workload["floor"]
    used = dict.fromkeys(
        record["variant"]
        for case in workload["cases"]
        for record in [*case["variants"], *case["skipped"]]
    )
    legend = "; ".join(f"{key} = {VARIANT_LABELS.get(key, key)}" for key in used)
    table = Table(
        title=f"{workload['key']}: {workload['title']}",
        caption=escape(f"{workload['description']}\n{legend}"),
        caption_justify="left",
        title_justify="left",
    )
    table.add_column("case")
    table.add_column("variant")
    for name in ("stmts/op", "trips/op", "n", "p50 ms", "p95 ms", "p99 ms", "CPU us/op"):
        table.add_column(name, justify="right")
    for name in (rate, "peak KiB"):
        table.add_column(name, justify="right")
    table.add_column(f"x {floor}" if floor else "x floor", justify="right")
    table.add_column("CPU x", justify="right")
    for case in workload["cases"]:
        for index, record in enumerate(case["variants"]):
            ratio = record.get("ratio_to_floor")
            cpu_ratio = record.get("cpu_ratio_to_floor")
            table.add_row(
                case["label"] if index == 0 else "",
                record["variant"],
                _number(record["statements_per_op"], 1),
                _number(record.get("round_trips_per_op"), 1),
                str(record["samples"]),
                _number(record["p50_ms"], 3),
                _number(record["p95_ms"], 3),
                _number(record["p99_ms"], 3),
                _number(record.get("cpu_us_per_op"), 0),
                _number(record.get("rows_per_s" if workload["unit"] == "row" else "ops_per_s"), 1),
                _number(record["peak_memory_kib"], 0),
                "-" if ratio is None else f"{ratio:.2f}",
                "-" if cpu_ratio is None else f"{cpu_ratio:.2f}",
                end_section=index == len(case["variants"]) - 1 and not case["skipped"],
            )
        for index, skipped in enumerate(case["skipped"]):
            table.add_row(
                "",
                f"[dim]{skipped['variant']}[/dim]",
                "[dim]skipped[/dim]",
                end_section=index == len(case["skipped"]) - 1,
            )
    reasons = dict.fromkeys(
        f"{skipped['variant']} skipped: {skipped['reason']}"
        for case in workload["cases"]
        for skipped in case["skipped"]
    )
    if reasons:
        table.caption = f"{table.caption}\n" + escape("\n".join(reasons))
    return table


def print_report(console: Console, run: dict[str, Any]) -> None:
    for workload in run["workloads"].values():
        console.print(workload_table(workload))
        console.print()
    if run["goals"]:
        goals = Table(title="Goals", title_justify="left")
        goals.add_column("goal")
        goals.add_column("measured")
        goals.add_column("status", justify="center")
        colours = {
            "met": "green",
            "not met": "red",
            "out of reach": "magenta",
            "reported": "cyan",
            "not measured": "yellow",
        }
        for goal in run["goals"]:
            colour = colours[goal["status"]]
            status = f"[{colour}]{goal['status']}[/{colour}]"
            goals.add_row(escape(goal["goal"]), escape(goal["measured"]), status)
        console.print(goals)
    for note in run["notes"]:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
