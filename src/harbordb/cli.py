"""The `harbordb` command.

Each subcommand is a function that adds its parser and sets `handler`; append
it to `SUBCOMMANDS`. Subcommands import their machinery inside the handler, so
`harbordb --help` needs no optional dependency.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harbordb.bench.options import add_arguments

    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite",
        description="Run the benchmark suite (default set: W1-W6) on a throwaway embedded "
        "PostgreSQL, or on --database-url; print a table, write JSON and PNG plots.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Run the bench from parsed `bench` flags; the exit status."""
    try:
        from harbordb.bench.options import options_from_args
        from harbordb.bench.runner import BenchError, run
    except ImportError as exc:
        print(
            f"harbordb bench: {exc.name or exc} is missing; install the extra: "
            "pip install 'harbordb[bench]'",
            file=sys.stderr,
        )
        return 1
    try:
        run(options_from_args(args))
    except BenchError as exc:
        print(f"harbordb bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harbordb bench: interrupted", file=sys.stderr)
        return 130
    return 0


def _sweep(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harbordb.sweeper import add_sweep_command

    add_sweep_command(subparsers)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _bench,
    _sweep,
]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "harbordb", description="harbordb: an async data layer for PostgreSQL."
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
