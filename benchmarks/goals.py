"""The goals of issues 4 and 9, checked against a run's results.

Each goal's status is "met", "not met", "reported" (a figure to report, not a
threshold) or "not measured" (its workload or variant did not run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from benchmarks.results import round_ratio, variant_in

# selectinload sends the parents' keys in IN batches of this many by default
# (SQLAlchemy 2.1 added selectinload(chunksize=...)): constant in N per batch.
SELECTIN_BATCH = 500


def _goal(goal: str, measured: str, status: str) -> dict[str, Any]:
    return {"goal": goal, "measured": measured, "status": status}


def _single_case(run: dict[str, Any], key: str) -> dict[str, Any] | None:
    workload = run["workloads"].get(key)
    return workload["cases"][0] if workload and workload["cases"] else None


def _ratio_goal(
    run: dict[str, Any],
    goal: str,
    subject: str,
    anchor: str,
    limits: Mapping[str, float],
    *,
    by_round: bool = False,
) -> dict[str, Any] | None:
    """p50(subject) / p50(anchor) per workload: met when each is at most its limit
    (`limits`: workload key -> largest ratio allowed). With `by_round`, judged on
    the median over rounds of the two variants' p50s within each round."""
    if not any(key in run["workloads"] for key in limits):
        return None
    parts: list[str] = []
    missing: list[str] = []
    met = True
    for key, limit in limits.items():
        case = _single_case(run, key)
        if case is None:
            missing.append(f"{key} not run")
            continue
        mine, theirs = variant_in(case, subject), variant_in(case, anchor)
        if mine is None or theirs is None:
            absent = subject if mine is None else anchor
            why = next((s["reason"] for s in case["skipped"] if s["variant"] == absent), "absent")
            missing.append(f"{key}: {absent} {why}")
            continue
        ratio = mine["p50_ms"] / theirs["p50_ms"]
        text = (
            f"{key}: {subject} {mine['p50_ms']:.2f} ms / {anchor} {theirs['p50_ms']:.2f} ms "
            f"= {ratio:.2f}x (p50)"
        )
        per_round = round_ratio(mine, theirs)
        if by_round and per_round is not None:
            ratio = per_round
            text += f", {per_round:.2f}x (median of per-round ratios)"
        met = met and ratio <= limit
        parts.append(f"{text}; at most {limit:.2f}x")
    measured = "; ".join(parts + missing)
    if missing or not parts:
        return _goal(goal, measured, "not measured")
    return _goal(goal, measured, "met" if met else "not met")


def _scaling_goal(run: dict[str, Any], subject: str, limit: float) -> dict[str, Any] | None:
    """p50(subject) / p50(asyncpg-in) at every N of W4, judged round by round."""
    workload = run["workloads"].get("W4")
    if workload is None:
        return None
    goal = f"{PROJECTION_LABEL} at most {limit:.1f}x of asyncpg-in at every N of W4"
    parts: list[str] = []
    met = True
    for case in workload["cases"]:
        mine, theirs = variant_in(case, subject), variant_in(case, "asyncpg-in")
        if mine is None or theirs is None:
            return _goal(goal, f"N={case['params']['n']}: a variant is missing", "not measured")
        ratio = round_ratio(mine, theirs) or mine["p50_ms"] / theirs["p50_ms"]
        met = met and ratio <= limit
        parts.append(f"N={case['params']['n']}: {ratio:.2f}x")
    measured = ", ".join(parts) + " (median of per-round ratios)"
    return _goal(goal, measured, "met" if met and parts else "not met")


def _memory_goal(run: dict[str, Any], subject: str, factor: float) -> dict[str, Any] | None:
    """Python peak per operation: `subject` at least `factor` times below `repository`
    on W2, W3 and W4 at its largest N.

    Out of reach where the ORM read's peak is below `factor` times the lowest peak
    any read of the same data measured: the leanest raw asyncpg read's (it holds
    the rows and nothing else), or without one the floor (a bare SELECT 1's peak,
    which every asyncpg read on asyncio's loop has: its 256 KiB receive buffer).
    """
    cases: list[tuple[str, dict[str, Any]]] = []
    for key in ("W2", "W3"):
        case = _single_case(run, key)
        if case is not None:
            cases.append((key, case))
    w4 = run["workloads"].get("W4")
    if w4 and w4["cases"]:
        largest = max(w4["cases"], key=lambda c: c["params"]["n"])
        cases.append((f"W4 N={largest['params']['n']}", largest))
    if not cases:
        return None
    goal = f"{PROJECTION_LABEL}: Python peak memory per operation {factor:g}x below ORM objects"
    floor = run.get("memory_floor_kib")
    parts: list[str] = []
    missed = reachable = 0
    for label, case in cases:
        mine, orm = variant_in(case, subject), variant_in(case, "repository")
        if mine is None or orm is None:
            return _goal(goal, f"{label}: a variant is missing", "not measured")
        below = orm["peak_memory_kib"] / mine["peak_memory_kib"]
        part = (
            f"{label}: {mine['peak_memory_kib']:,.0f} vs {orm['peak_memory_kib']:,.0f} KiB "
            f"({below:.2f}x below"
        )
        if below < factor:
            missed += 1
            raw_peaks = [
                (v["peak_memory_kib"], v["variant"])
                for v in case["variants"]
                if v["variant"].startswith("asyncpg")
            ]
            lowest, what = min(raw_peaks) if raw_peaks else (floor, None)
            if floor and lowest < floor:
                lowest, what = floor, None
            if lowest and orm["peak_memory_kib"] < factor * lowest:
                where = (
                    "the floor every asyncpg read has"
                    if what is None
                    else f"the leanest raw read of the same data ({what}, {lowest:,.0f} KiB)"
                )
                part += (
                    f"; out of reach: the ORM read peaks at "
                    f"{orm['peak_memory_kib'] / lowest:.2f}x {where}"
                )
            else:
                reachable += 1
        if floor and mine["peak_memory_kib"] > floor:
            # What the reads allocated beyond the peak of a bare SELECT 1 (the driver's floor).
            mine_net, orm_net = mine["peak_memory_kib"] - floor, orm["peak_memory_kib"] - floor
            part += (
                f"; beyond a bare SELECT 1's {floor:,.0f} KiB: {mine_net:,.0f} vs "
                f"{orm_net:,.0f} KiB, {orm_net / mine_net:.1f}x"
            )
            raw = [
                (v["peak_memory_kib"] - floor, v["variant"])
                for v in case["variants"]
                if v["variant"].startswith("asyncpg") and v["peak_memory_kib"] > floor
            ]
            if raw:  # no projection can hold less than the rows of the leanest raw read
                least, name = min(raw)
                part += f"; the leanest raw read ({name}) {least:,.0f} KiB, {orm_net / least:.1f}x"
        parts.append(part + ")")
    status = "met" if not missed else "not met" if reachable else "out of reach"
    return _goal(goal, "; ".join(parts), status)


def _statements_goal(run: dict[str, Any]) -> dict[str, Any] | None:
    goal = (
        "selectinload's statements per operation constant in N (per IN batch of "
        f"{SELECTIN_BATCH} parents: 1 + ceil(N/{SELECTIN_BATCH})); N+1's growing as N + 1"
    )
    workload = run["workloads"].get("W4") or run["workloads"].get("nplus1")
    if workload is None:
        return None
    selectin: dict[int, float] = {}
    nplus1: dict[int, float] = {}
    for case in workload["cases"]:
        n = case["params"]["n"]
        for key, into in (("selectinload", selectin), ("n+1", nplus1)):
            record = variant_in(case, key)
            if record is not None:
                into[n] = record["statements_per_op"]
    if not selectin or not nplus1:
        return _goal(goal, f"{workload['key']}: a variant is missing", "not measured")
    constant = all(count == 1 + math.ceil(n / SELECTIN_BATCH) for n, count in selectin.items())
    linear = all(count == n + 1 for n, count in nplus1.items())
    measured = (
        f"{workload['key']}: selectinload "
        + ", ".join(f"N={n}: {c:g}" for n, c in sorted(selectin.items()))
        + "; N+1 "
        + ", ".join(f"N={n}: {c:g}" for n, c in sorted(nplus1.items()))
    )
    return _goal(goal, measured, "met" if constant and linear else "not met")


def _pool_goal(run: dict[str, Any]) -> dict[str, Any] | None:
    goal = "NullPool through PgBouncer against QueuePool direct, W1 at concurrency 10"
    workload = run["workloads"].get("W6")
    if workload is None:
        return None
    case = next((c for c in workload["cases"] if c["params"].get("concurrency") == 10), None)
    if case is None:
        return _goal(goal, "W6 at concurrency 10 not run", "not measured")
    direct, bounced = variant_in(case, "queuepool-direct"), variant_in(case, "nullpool-pgbouncer")
    if direct is None or bounced is None:
        return _goal(goal, "a pool mode is missing", "not measured")
    latency = bounced["p50_ms"] / direct["p50_ms"]
    throughput = (bounced["ops_per_s"] or 0) / (direct["ops_per_s"] or 1)
    measured = (
        f"p50 latency {latency:.2f}x ({bounced['p50_ms']:.2f} vs {direct['p50_ms']:.2f} ms), "
        f"throughput {throughput:.2f}x ({bounced['ops_per_s']:.0f} vs {direct['ops_per_s']:.0f} "
        "ops/s)"
    )
    return _goal(goal, measured, "reported")


# Issue 9's budgets, as ratios of p50 latency.
ORM_BUDGET = {"W1": 1.5, "W2": 2.0, "W3": 1.5}  # repository / asyncpg-in
TORTOISE_SPEEDUP = 1.5  # the repository at least this many times faster than Tortoise
PROJECTION_BUDGET = 1.0  # projection / asyncpg-in, W2, W3 and every N of W4
PROJECTION_MEMORY = 3.0  # projection's peak at least this many times below repository's


# The unit of work (issue 9): entering and leaving a read-only one costs at most this
# many times raw asyncpg's BEGIN; ROLLBACK, in wall time and in client CPU.
UOW_BUDGET = 1.2
UOW_WORKLOAD = "uow"
UOW_EXIT_FIGURES = "uow_exit"  # benchmarks.workloads.unitofwork.EXIT_FIGURES


def _uow_case(run: dict[str, Any], label: str) -> dict[str, Any] | None:
    workload = run["workloads"].get(UOW_WORKLOAD)
    if workload is None:
        return None
    return next((case for case in workload["cases"] if case["label"] == label), None)


def _versus(case: dict[str, Any], subject: str, anchor: str) -> tuple[float, float, str] | None:
    """(wall ratio, CPU ratio, text): medians of per-round ratios of p50 and of CPU/op."""
    mine, theirs = variant_in(case, subject), variant_in(case, anchor)
    if mine is None or theirs is None:
        return None
    wall = round_ratio(mine, theirs)
    cpu = round_ratio(mine, theirs, "round_cpu_us")
    if wall is None or cpu is None:
        return None
    text = (
        f"{case['label']}: {subject} / {anchor}: wall p50 {mine['p50_ms'] * 1000:.0f} / "
        f"{theirs['p50_ms'] * 1000:.0f} us = {wall:.2f}x, client CPU "
        f"{mine['cpu_us_per_op']:.0f} / {theirs['cpu_us_per_op']:.0f} us = {cpu:.2f}x"
    )
    return wall, cpu, text


def _uow_cost_goal(run: dict[str, Any]) -> dict[str, Any] | None:
    goal = (
        f"enter + exit of a read-only unit of work within {UOW_BUDGET}x of raw asyncpg's "
        "BEGIN; ROLLBACK, wall time and client CPU (medians of per-round ratios)"
    )
    if UOW_WORKLOAD not in run["workloads"]:
        return None
    empty = _uow_case(run, "empty")
    judged = None if empty is None else _versus(empty, "uow-read-only", "asyncpg")
    if judged is None:
        return _goal(goal, "the empty case or a variant is missing", "not measured")
    wall, cpu, text = judged
    # For context: the same against BEGIN READ ONLY and SQLAlchemy's session alone,
    # and with one statement inside.
    context = [text]
    comparisons = [("empty", "asyncpg-read-only"), ("empty", "sqlalchemy-session")]
    comparisons += [
        ("one statement", anchor) for anchor in ("asyncpg-read-only", "sqlalchemy-session")
    ]
    for label, anchor in comparisons:
        case = _uow_case(run, label)
        found = None if case is None else _versus(case, "uow-read-only", anchor)
        if found is not None:
            context.append(found[2])
    assert empty is not None
    taken = _versus(empty, "uow-session", "asyncpg")  # the block takes its session
    if taken is not None:
        context.append(taken[2])
    met = wall <= UOW_BUDGET and cpu <= UOW_BUDGET
    return _goal(goal, "; ".join(context), "met" if met else "not met")


def _uow_exit_goal(run: dict[str, Any]) -> dict[str, Any] | None:
    goal = (
        "no per-object work at the end of a unit of work that wrote nothing: the Python "
        "lines its exit executes do not grow with the ORM objects it loaded"
    )
    if UOW_WORKLOAD not in run["workloads"]:
        return None
    exits: dict[str, dict[str, dict[str, float]]] = run.get("figures", {}).get(UOW_EXIT_FIGURES, {})
    objects = next((label for label in exits if "products" in label), None)
    single = exits.get("one statement", {})
    if objects is None or "uow-read-only" not in single or "uow-read-only" not in exits[objects]:
        return _goal(goal, "the exits were not measured", "not measured")
    parts = []
    for key in ("uow-read-only", "sqlalchemy-session"):
        loaded, alone = exits[objects].get(key), single.get(key)
        if loaded and alone:
            parts.append(
                f"{key}: {loaded['lines']:g} lines, {loaded['cpu_us']:g} us CPU with {objects} "
                f"loaded; {alone['lines']:g} lines, {alone['cpu_us']:g} us after one statement"
            )
    grows = exits[objects]["uow-read-only"]["lines"] > single["uow-read-only"]["lines"]
    return _goal(goal, "; ".join(parts), "not met" if grows else "met")


PROJECTION_LABEL = "harbordb typed projection (frozen dataclasses, shape chosen per read)"


# The second peer (issue 9): SQLAlchemy on psycopg 3, pooler-safe (prepare_threshold=None).
# Each harbordb read against what a user of that stack writes for it, and the
# projection against raw psycopg 3 running asyncpg-in's statements.
PSYCOPG_AHEAD = "harbordb ahead of SQLAlchemy on psycopg 3"
PSYCOPG_PAIRS = (
    ("repository", "psycopg-selectinload", ("W1", "W2", "W3")),
    ("repository-view", "psycopg-core-in", ("W2", "W3")),
    ("projection", "psycopg-core-in", ("W2", "W3")),
)


def _psycopg_goals(run: dict[str, Any]) -> list[dict[str, Any] | None]:
    goals: list[dict[str, Any] | None] = [
        _ratio_goal(
            run,
            f"{PSYCOPG_AHEAD}: {subject} faster than {anchor} on {', '.join(workloads)} "
            "(median of per-round ratios)",
            subject,
            anchor,
            dict.fromkeys(workloads, 1.0),
            by_round=True,
        )
        for subject, anchor, workloads in PSYCOPG_PAIRS
    ]
    goals.append(
        _ratio_goal(
            run,
            f"{PROJECTION_LABEL} on W2 and W3 at most {PROJECTION_BUDGET}x of raw psycopg 3's "
            "same statements (psycopg-in), concurrency 1",
            "projection",
            "psycopg-in",
            dict.fromkeys(("W2", "W3"), PROJECTION_BUDGET),
            by_round=True,
        )
    )
    return goals


def evaluate(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals whose workloads ran."""
    w2_w3 = ("W2", "W3")
    goals: list[dict[str, Any] | None] = [
        _ratio_goal(
            run,
            "harbordb repository read (ORM objects) within "
            + ", ".join(f"{limit}x ({key})" for key, limit in ORM_BUDGET.items())
            + " of raw asyncpg's same statements (asyncpg-in), concurrency 1",
            "repository",
            "asyncpg-in",
            ORM_BUDGET,
            by_round=True,
        ),
        _ratio_goal(
            run,
            f"harbordb repository read (ORM objects) at least {TORTOISE_SPEEDUP}x faster than "
            "Tortoise's prefetch_related on W2 and W3",
            "repository",
            "tortoise",
            dict.fromkeys(w2_w3, 1 / TORTOISE_SPEEDUP),
            by_round=True,
        ),
        _ratio_goal(
            run,
            f"{PROJECTION_LABEL} on W2 and W3 at most {PROJECTION_BUDGET}x of raw asyncpg's "
            "same statements (asyncpg-in), concurrency 1",
            "projection",
            "asyncpg-in",
            dict.fromkeys(w2_w3, PROJECTION_BUDGET),
            by_round=True,
        ),
        _ratio_goal(
            run,
            "harbordb read model (catalog_cards, history) faster than Tortoise's "
            "prefetch_related on W2 and W3",
            "repository-view",
            "tortoise",
            dict.fromkeys(w2_w3, 1.0),
        ),
        *_psycopg_goals(run),
        _scaling_goal(run, "projection", PROJECTION_BUDGET),
        _memory_goal(run, "projection", PROJECTION_MEMORY),
        _uow_cost_goal(run),
        _uow_exit_goal(run),
        _statements_goal(run),
        _pool_goal(run),
    ]
    return [goal for goal in goals if goal is not None]
