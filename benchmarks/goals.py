"""The goals of issue 4, checked against a run's results.

Each goal's status is "met", "not met", "reported" (a figure to report, not a
threshold) or "not measured" (its workload or variant did not run).
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.results import round_ratio, variant_in

REPOSITORY_BUDGET = 1.5  # the repository read may take this many times raw asyncpg's
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
    limit: float | None,
    *,
    by_round: bool = False,
) -> dict[str, Any] | None:
    """p50(subject) / p50(anchor) on W2 and W3: met when every ratio is at most `limit`
    (below 1 when `limit` is None: "faster than"). With `by_round`, judged on the
    median over rounds of the two variants' p50s within each round (`round_ratio`)."""
    if "W2" not in run["workloads"] and "W3" not in run["workloads"]:
        return None
    parts: list[str] = []
    ratios: list[float] = []
    missing: list[str] = []
    for key in ("W2", "W3"):
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
        ratios.append(ratio)
        parts.append(text)
    measured = "; ".join(parts + missing)
    if missing or not ratios:
        return _goal(goal, measured, "not measured")
    met = all(r <= limit if limit is not None else r < 1.0 for r in ratios)
    return _goal(goal, measured, "met" if met else "not met")


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


# The harbordb reads the first two goals are checked for: the ORM repository
# method, and the read model (Core rows into frozen dataclasses). Both are
# reported, so an unmet goal stays visible next to a met one.
HARBORDB_READS = {
    "repository": "harbordb repository read (ORM objects)",
    "repository-view": "harbordb read-model read (catalog_cards, history)",
}


# Typed projections (issue 9): at most raw asyncpg's time for the same graph.
PROJECTION_BUDGET = 1.0
PROJECTION_LABEL = "harbordb typed projection (one statement, frozen dataclasses)"


def evaluate(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals whose workloads ran."""
    goals: list[dict[str, Any] | None] = []
    for subject, label in HARBORDB_READS.items():
        goals.append(
            _ratio_goal(
                run,
                f"{label} on W2 and W3 within {REPOSITORY_BUDGET}x of raw asyncpg's "
                "same-shape path, concurrency 1",
                subject,
                "asyncpg-in",
                REPOSITORY_BUDGET,
            )
        )
    for subject, label in HARBORDB_READS.items():
        goals.append(
            _ratio_goal(
                run,
                f"{label} faster than Tortoise's prefetch_related on W2 and W3",
                subject,
                "tortoise",
                None,
            )
        )
    goals.append(
        _ratio_goal(
            run,
            f"{PROJECTION_LABEL} on W2 and W3 at most {PROJECTION_BUDGET}x of raw asyncpg's "
            "same-shape path (asyncpg-in), concurrency 1",
            "projection",
            "asyncpg-in",
            PROJECTION_BUDGET,
            by_round=True,
        )
    )
    goals += [_statements_goal(run), _pool_goal(run)]
    return [goal for goal in goals if goal is not None]
