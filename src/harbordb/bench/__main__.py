"""`python -m harbordb.bench`: the same as `harbordb bench`."""

from __future__ import annotations

import argparse
import sys

from harbordb.bench.options import add_arguments
from harbordb.cli import run_bench


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harbordb.bench", description="Run harbordb's benchmark suite."
    )
    add_arguments(parser)
    return run_bench(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
