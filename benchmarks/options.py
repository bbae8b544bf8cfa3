"""Command-line options of `python -m benchmarks` and the sizes each mode runs at.

This module imports nothing heavy, so `harbordb --help` works without the
``bench`` extra installed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

# Workload keys in run order. `nplus1` is issue 2's first benchmark (N+1 against
# selectinload); W4 grows it into every strategy, so the default set leaves it out.
# `replicas` starts a standby of its own: opt-in (--only replicas).
WORKLOAD_KEYS = ("nplus1", "uow", "W1", "W2", "W3", "W4", "W5", "W6", "replicas")
DEFAULT_WORKLOADS = ("uow", "W1", "W2", "W3", "W4", "W5", "W6")


@dataclass(frozen=True)
class Sizes:
    """How big the data is and how long each measurement runs."""

    customers: int  # seeded; each has `orders_per_customer` orders of `items_per_order` items
    products: int  # seeded; each has 4 variants and 3 tags
    page_size: int  # W2's catalog page
    nplus1_n: tuple[int, ...]  # the nplus1 workload's N values
    scale_n: tuple[int, ...]  # W4's N values
    nplus1_max: int  # N+1 is measured up to this N in W4 (it dominates the run time beyond)
    bulk_rows: tuple[int, ...]  # W5
    concurrency: tuple[int, ...]  # W6
    repeats: int  # timed rounds per case, variants interleaved within each round
    round_seconds: float  # how long one variant's batch runs in one round (at least 1 op)
    max_batch: int  # at most this many operations per variant (and task) per round
    case_seconds: float | None  # a case stops after 3 rounds once it would overrun this
    orders_per_customer: int = 5
    items_per_order: int = 3


FULL = Sizes(
    customers=10_000,
    products=1_000,
    page_size=50,
    nplus1_n=(10, 100, 1_000),
    scale_n=(10, 100, 1_000, 10_000),
    nplus1_max=1_000,
    bulk_rows=(10_000, 100_000),
    concurrency=(1, 10, 64),
    repeats=5,
    round_seconds=0.15,
    max_batch=500,
    case_seconds=60.0,
)

# The smoke run of the test suite: every workload and variant, tiny data, one round.
QUICK = Sizes(
    customers=20,
    products=120,
    page_size=50,
    nplus1_n=(2, 5, 10),
    scale_n=(2, 5, 10),
    nplus1_max=10,
    bulk_rows=(50, 200),
    concurrency=(1, 4),
    repeats=1,
    round_seconds=0.0,
    max_batch=1,
    case_seconds=None,
)


@dataclass(frozen=True)
class BenchOptions:
    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    database_url: str | None = None
    pgbouncer: bool = False
    quick: bool = False
    output: Path | None = None  # None: benchmarks/results in a checkout, else ./bench-results
    plots: bool = True
    seed: int = 20_240_611
    sizes: Sizes = field(default_factory=lambda: FULL)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected a comma-separated list of whole numbers")
    values = tuple(_positive_int(part.replace("_", "")) for part in parts)
    return tuple(sorted(set(values)))


def _workload_list(text: str) -> tuple[str, ...]:
    by_lower = {key.lower(): key for key in WORKLOAD_KEYS}
    chosen: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key = by_lower.get(part.lower())
        if key is None:
            raise argparse.ArgumentTypeError(
                f"unknown workload {part!r}; choose from {', '.join(WORKLOAD_KEYS)}"
            )
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise argparse.ArgumentTypeError("--only needs at least one workload name")
    return tuple(key for key in WORKLOAD_KEYS if key in chosen)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench` flags, shared by `python -m benchmarks`."""
    parser.add_argument(
        "--only",
        type=_workload_list,
        metavar="W1,W2",
        help=f"run these workloads (from {', '.join(WORKLOAD_KEYS)}); "
        f"default {','.join(DEFAULT_WORKLOADS)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny data, one round, a few seconds (the test suite runs this)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="run against this PostgreSQL database instead of a throwaway embedded server; "
        "its Harbor tables must be empty (they are migrated, filled, then emptied again)",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="run the workloads through a PgBouncer (transaction mode) started in front "
        "of the server",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        help="timed rounds per case (default 5; without this flag a slow case may stop "
        "after 3 rounds to keep the run near 5 minutes)",
    )
    parser.add_argument("--output", type=Path, metavar="DIR", help="where JSON and PNGs go")
    parser.add_argument("--no-plots", action="store_true", help="write JSON only, no PNG plots")
    parser.add_argument("--seed", type=int, help="random seed of the generated data")
    parser.add_argument("--scale-n", type=_int_list, metavar="10,100", help="W4's N values")
    parser.add_argument(
        "--nplus1-max",
        type=_positive_int,
        metavar="N",
        help="largest N at which W4 measures the N+1 variant (default 1000)",
    )
    parser.add_argument("--bulk-rows", type=_int_list, metavar="10000", help="W5's row counts")
    parser.add_argument("--concurrency", type=_int_list, metavar="1,10", help="W6's task counts")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Turn parsed flags into options; flags override the quick or full sizes."""
    sizes = QUICK if args.quick else FULL
    overrides: dict[str, object] = {}
    if args.repeats is not None:  # exactly this many rounds: no time budget
        overrides["repeats"] = args.repeats
        overrides["case_seconds"] = None
    if args.scale_n is not None:
        overrides["scale_n"] = args.scale_n
    if args.nplus1_max is not None:
        overrides["nplus1_max"] = args.nplus1_max
    if args.bulk_rows is not None:
        overrides["bulk_rows"] = args.bulk_rows
    if args.concurrency is not None:
        overrides["concurrency"] = args.concurrency
    sizes = replace(sizes, **overrides)  # type: ignore[arg-type]
    # Every N must fit in the seeded customers.
    largest = max((*sizes.scale_n, *sizes.nplus1_n))
    sizes = replace(sizes, customers=max(sizes.customers, largest))
    defaults = BenchOptions()
    return BenchOptions(
        workloads=args.only or defaults.workloads,
        database_url=args.database_url,
        pgbouncer=args.pgbouncer,
        quick=args.quick,
        output=args.output,
        plots=not args.no_plots,
        seed=defaults.seed if args.seed is None else args.seed,
        sizes=sizes,
    )
