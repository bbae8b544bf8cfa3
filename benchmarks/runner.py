"""The bench run: start the servers, seed, measure every case, report, write files."""

from __future__ import annotations

import asyncio
import gc
import time
from contextlib import AsyncExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import environment, goals, markdown, peer, psycopg_peer, seed
from benchmarks.core import Lab
from benchmarks.measure import MIN_ROUNDS, driver_floor_kib, run_case, steps
from benchmarks.options import DEFAULT_WORKLOADS, BenchOptions
from benchmarks.report import print_report
from benchmarks.results import SCHEMA, case_record, workload_record, write_json
from benchmarks.servers import (
    BenchError,
    Target,
    checkout_results_dir,
    open_target,
    pgbouncer_version,
)
from benchmarks.workloads import WORKLOADS
from harbor_commerce.uow import commerce_database
from harbordb.db import asyncpg_dsn


def output_stem(options: BenchOptions) -> str:
    """`latest` for the default full run; other runs never overwrite its files."""
    if options.quick:
        return "quick"
    if options.workloads == DEFAULT_WORKLOADS:
        return "latest"
    return "only-" + "-".join(options.workloads)


async def _measure(
    options: BenchOptions, target: Target, lab_notes: list[str], console: Console
) -> dict[str, Any]:
    sizes = options.sizes
    direct = await asyncpg.connect(asyncpg_dsn(target.direct_url), statement_cache_size=0)
    try:
        await seed.ensure_empty(direct)
        started = time.perf_counter()
        dataset = await seed.seed(direct, sizes, options.seed)
        seeded_in = time.perf_counter() - started
        server_version = await direct.fetchval("SHOW server_version")
        figures: dict[str, Any] = {}  # filled by workloads as the lab closes
        try:
            async with AsyncExitStack() as stack:
                raw = await asyncpg.connect(asyncpg_dsn(target.url), statement_cache_size=0)
                stack.push_async_callback(raw.close)
                db = await stack.enter_async_context(commerce_database(target.url, pooler="none"))
                tortoise = False
                if {"W2", "W3"} & set(options.workloads):
                    tortoise = await peer.start(target.url, stack, lab_notes)
                lab = Lab(
                    target, sizes, dataset, db, raw, tortoise, stack, lab_notes, figures=figures
                )
                if {"W1", "W2", "W3", "W4"} & set(options.workloads):
                    lab.psycopg = await psycopg_peer.start(
                        target.url, db.settings, stack, lab_notes
                    )
                floor = await driver_floor_kib(raw)
                workloads = await _run_workloads(options, lab, console)
        finally:
            await seed.empty(direct)
    finally:
        await direct.close()
    return {
        "postgresql": server_version,
        "dataset": {**asdict(dataset), "seconds_to_seed": round(seeded_in, 2)},
        "workloads": workloads,
        "figures": figures,
        "memory_floor_kib": floor,
    }


async def _run_workloads(options: BenchOptions, lab: Lab, console: Console) -> dict[str, Any]:
    chosen = [WORKLOADS[key] for key in options.workloads if key in WORKLOADS]
    if lab.target.bouncer_url is None and any(w.key == "W6" for w in chosen):
        chosen = [w for w in chosen if w.key != "W6"]  # open_target left a note
    built = [(workload, await workload.build(lab)) for workload in chosen]
    # Everything alive now lives to the end: keep it out of the collections that
    # run between batches, which then cost little and the same for every variant.
    gc.collect()
    gc.freeze()
    total = sum(
        steps(case, lab, warm_up=index == 0)
        for _, cases in built
        for index, case in enumerate(cases)
    )
    records: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description:<48}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=total)

        for workload, cases in built:

            def advance(description: str, key: str = workload.key) -> None:
                progress.update(task, advance=1, description=f"{key} {description}")

            done = [
                case_record(workload, case, await run_case(case, lab, advance, warm_up=index == 0))
                for index, case in enumerate(cases)
            ]
            records[workload.key] = workload_record(workload, done)
    return records


def _options_record(options: BenchOptions) -> dict[str, Any]:
    record = asdict(options)
    record["output"] = str(options.output) if options.output else None
    record["database_url"] = "given" if options.database_url else None  # never the URL itself
    return record


def run(options: BenchOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the bench as `options` say; print the report and write the files."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file or a pipe: room for every column
            console = Console(width=160)
    notes: list[str] = []
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    needs_bouncer = (
        "required" if options.pgbouncer else "wanted" if "W6" in options.workloads else "no"
    )
    with open_target(options.database_url, pgbouncer=needs_bouncer, notes=notes) as target:
        where = "embedded PostgreSQL" if target.server == "embedded" else "the given database"
        via = " through PgBouncer" if target.via_pgbouncer else ""
        console.print(f"benchmarks: {', '.join(options.workloads)} on {where}{via}")
        measured = asyncio.run(_measure(options, target, notes, console))
    run_record: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 1),
        "mode": "quick" if options.quick else "full",
        "options": _options_record(options),
        "environment": {
            **environment.machine(),
            "postgresql": measured["postgresql"],
            "pgbouncer": pgbouncer_version() if target.bouncer_url else None,
            "server": target.server,
            "via_pgbouncer": target.via_pgbouncer,
        },
        "method": {
            "rounds": options.sizes.repeats,
            "min_rounds_within_budget": MIN_ROUNDS,
            "case_seconds": options.sizes.case_seconds,
            "round_seconds": options.sizes.round_seconds,
            "max_batch": options.sizes.max_batch,
            "interleaving": "every round runs every variant; the order rotates by one each round",
            "latency": "per operation, time.perf_counter_ns; percentiles interpolated linearly",
            "warmup": "one untimed operation per variant on each workload's first case",
            "statements": "counted in one untimed operation (one per task when concurrent); "
            "BEGIN/COMMIT are not statements",
            "peak_memory": "tracemalloc peak of Python allocations during that same untimed "
            "operation, above what was allocated before it",
        },
        "dataset": measured["dataset"],
        "memory_floor_kib": measured["memory_floor_kib"],
        "workloads": measured["workloads"],
        "figures": measured["figures"],
        "notes": notes,
    }
    run_record["goals"] = goals.evaluate(run_record)
    print_report(console, run_record)
    output = options.output or checkout_results_dir()
    stem = output_stem(options)
    json_path = output / f"{stem}.json"
    write_json(run_record, json_path)
    markdown_path = output / f"{stem}.md"
    markdown_path.write_text(markdown.render(run_record))
    written = [json_path, markdown_path]
    if options.plots:
        written += _plots(run_record, output, stem, console)
    console.print("wrote " + ", ".join(str(path) for path in written))
    return run_record


def _plots(run_record: dict[str, Any], output: Path, stem: str, console: Console) -> list[Path]:
    try:
        from benchmarks import plots
    except ImportError:
        console.print(
            "[yellow]note:[/yellow] matplotlib is not installed: no plots "
            "(pip install 'harbordb\\[bench]')"
        )
        return []
    return plots.write_all(run_record, output, stem)


__all__ = ["BenchError", "output_stem", "run"]
