"""The `harbordb` command.

Each subcommand is a function that adds its parser and sets `handler`; append
it to `SUBCOMMANDS`. Subcommands import their machinery inside the handler, so
`harbordb --help` needs no optional dependency.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


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
