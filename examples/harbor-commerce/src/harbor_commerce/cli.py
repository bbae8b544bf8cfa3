"""The `harbor-commerce` command: the shop's operational commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from harbor_commerce.api.serve import add_serve_command
from harbor_commerce.demo import add_seed_command
from harbor_commerce.sweeper import add_sweep_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harbor-commerce", description="Harbor Commerce, the worked example on harbordb."
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_sweep_command(subparsers)
    add_seed_command(subparsers)
    add_serve_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
