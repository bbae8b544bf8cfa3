"""`python -m benchmarks` (what `make bench` runs): harbordb's benchmark suite."""

from __future__ import annotations

import argparse
import sys

from benchmarks.options import add_arguments, options_from_args
from benchmarks.runner import BenchError, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run harbordb's benchmark suite (default set: "
        "W1-W6) on a throwaway embedded PostgreSQL, or on --database-url; print a table, write "
        "JSON, Markdown and PNG plots.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(options_from_args(args))
    except BenchError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmarks: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
