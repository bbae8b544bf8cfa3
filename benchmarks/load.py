"""`python -m benchmarks.load`: the Harbor Commerce HTTP API under load (not a test).

Starts a throwaway PostgreSQL (and PgBouncer with ``--pgbouncer``), migrates
and seeds the demo shop, starts the API under uvicorn in its own process on
loopback, then runs `clients` concurrent clients for `seconds` seconds (and at
most `max_requests` requests). Each client loops: a catalog page, a product,
a reservation, then either its release or a checkout, then its orders.
Prints requests/s, p50 and p99 and errors per endpoint, and writes
``benchmarks/results/load.json`` and ``load.md``.

An error is a transport failure or an unexpected status; a 409 on a
reservation (stock ran out) would be counted apart as a refusal, but stock is
set high so that it does not happen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from benchmarks.servers import BenchError, checkout_results_dir, open_target

KEY = "load-run-signing-key-long-enough-for-hs256-0123456789"
ENDPOINTS = ("catalog", "product", "reserve", "release", "checkout", "orders")


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refusals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    requests: int = 0


@dataclass(frozen=True)
class Row:
    endpoint: str
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    refusals: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _seed(url: str, customers: int) -> tuple[list[int], list[int], list[int]]:
    """Demo shop with plenty of stock: (customer ids, product ids, variant ids)."""
    from harbor_commerce.demo import seed_demo
    from harbor_commerce.models import Product, Variant
    from harbor_commerce.uow import commerce_database

    async with commerce_database(url) as db:
        summary = await seed_demo(db, products=200, customers=customers)
        async with db.unit_of_work() as uow:
            await uow.session.execute(update(Variant).values(stock_qty=10_000_000))
            await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            products = [p.id for p in await uow.products.list(Product.archived_at.is_(None))]
            variants = [v.id for v in await uow.variants.list()]
    return summary.customers, products, variants


def _start_api(url: str, pooler: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HARBORDB_DATABASE_URL": url, "HARBORDB_POOLER": pooler,
           "HARBOR_API_JWT_KEY": KEY}  # fmt: skip
    for name in ("HARBORDB_OTEL", "HARBORDB_SLOW_STATEMENT_MS"):
        env.pop(name, None)
    command = [sys.executable, "-m", "uvicorn", "--factory", "harbor_commerce.api:create_app",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
               "--no-access-log"]  # fmt: skip
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)


async def _wait_until_up(base: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(600):
            if process.poll() is not None:
                raise BenchError("the API process exited during startup")
            try:
                if (await client.get("/catalog?limit=1")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise BenchError("the API did not answer within 60 s")


async def _client(
    base: str,
    token: str,
    products: list[int],
    variants: list[int],
    deadline: float,
    budget: int,
    stats: Stats,
    seed: int,
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

        async def call(name: str, method: str, path: str, ok: int, **kw: Any) -> Any:
            stats.requests += 1
            started = time.perf_counter()
            try:
                response = await client.request(method, path, **kw)
            except httpx.HTTPError:
                stats.errors[name] += 1
                return None
            stats.latencies[name].append(time.perf_counter() - started)
            if response.status_code == 409:
                stats.refusals[name] += 1
                return None
            if response.status_code != ok:
                stats.errors[name] += 1
                return None
            return response.json()

        while time.monotonic() < deadline and stats.requests < budget:
            params: dict[str, Any] = {"limit": 20}
            if rng.random() < 0.5:
                params["tag"] = rng.choice(("brass", "canvas", "rope", "gift", "sale"))
            await call("catalog", "GET", "/catalog", 200, params=params)
            await call("product", "GET", f"/products/{rng.choice(products)}", 200)
            ref = f"load-{uuid.uuid4().hex}"
            body = {"variant_id": rng.choice(variants), "qty": 1, "order_ref": ref}
            held = await call("reserve", "POST", "/reservations", 201, json=body)
            if held is not None:
                if rng.random() < 0.5:
                    await call("release", "POST", f"/reservations/{held['id']}/release", 200)
                else:
                    await call("checkout", "POST", "/checkout", 200, json={"order_ref": ref})
            await call("orders", "GET", "/me/orders", 200, params={"limit": 10})


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (Linux /proc), or this one's."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from harbor_commerce.api.auth import issue

    notes: list[str] = []
    mode = "pgbouncer" if args.pgbouncer else "direct"
    with open_target(None, pgbouncer="required" if args.pgbouncer else "no", notes=notes) as t:
        customers, products, variants = await _seed(t.direct_url, args.clients)
        port = _free_port()
        api = _start_api(t.url, "external" if args.pgbouncer else "none", port)
        base = f"http://127.0.0.1:{port}"
        try:
            await _wait_until_up(base, api)
            stats = Stats()
            api_cpu, client_cpu = _cpu_seconds(api.pid), _cpu_seconds()
            started = time.monotonic()
            deadline = started + args.seconds
            await asyncio.gather(
                *(
                    _client(
                        base,
                        issue(customer, KEY),
                        products,
                        variants,
                        deadline,
                        args.max_requests,
                        stats,
                        seed=i,
                    )
                    for i, customer in enumerate(customers)
                )
            )
            elapsed = time.monotonic() - started
            api_cpu = _cpu_seconds(api.pid) - api_cpu
            client_cpu = _cpu_seconds() - client_cpu
        finally:
            api.terminate()
            try:
                api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                api.kill()
    rows = [
        Row(
            endpoint=name,
            requests=len(stats.latencies[name]) + stats.errors[name],
            per_second=len(stats.latencies[name]) / elapsed,
            p50_ms=_percentile(stats.latencies[name], 0.50) * 1000,
            p99_ms=_percentile(stats.latencies[name], 0.99) * 1000,
            errors=stats.errors[name],
            refusals=stats.refusals[name],
        )
        for name in ENDPOINTS
    ]
    every = [x for name in ENDPOINTS for x in stats.latencies[name]]
    total = Row("all", stats.requests, len(every) / elapsed,
                _percentile(every, 0.5) * 1000, _percentile(every, 0.99) * 1000,
                sum(stats.errors.values()), sum(stats.refusals.values()))  # fmt: skip
    return {
        "mode": mode,
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "cpu_count": os.cpu_count(),
        "rows": [asdict(row) for row in [*rows, total]],
        "mean_ms": statistics.fmean(every) * 1000 if every else None,
        # CPU per answered request: the API process's, and the load clients' (same machine).
        "api_cpu_ms_per_request": api_cpu * 1000 / max(1, len(every)),
        "client_cpu_ms_per_request": client_cpu * 1000 / max(1, len(every)),
        "load_average": os.getloadavg()[0],
    }


def _markdown(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        lines += [
            f"{result['mode']}: {result['clients']} clients, {result['seconds']} s; CPU per "
            f"request: API {result['api_cpu_ms_per_request']:.2f} ms, clients "
            f"{result['client_cpu_ms_per_request']:.2f} ms; load average "
            f"{result['load_average']:.1f}",
            "",
            "| endpoint | requests | req/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in result["rows"]:
            lines.append(
                f"| {row['endpoint']} | {row['requests']} | {row['per_second']:.0f} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description="Load the Harbor Commerce API under uvicorn on loopback; per endpoint "
        "requests/s, p50, p99 and errors. Exit codes: 0 done, 1 could not run.",
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long (20)")
    parser.add_argument("--max-requests", type=int, default=500_000, help="a bound on requests")
    parser.add_argument("--pgbouncer", action="store_true", help="the API behind PgBouncer")
    parser.add_argument("--both", action="store_true", help="direct, then through PgBouncer")
    parser.add_argument("--output", type=Path, default=None, help="results directory")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 600:
        parser.error("--clients must be 1-256 and --seconds 0-600")
    results = []
    try:
        for pooled in (False, True) if args.both else (args.pgbouncer,):
            args.pgbouncer = pooled
            results.append(asyncio.run(_run(args)))
    except BenchError as exc:
        print(f"benchmarks.load: error: {exc}", file=sys.stderr)
        return 1
    text = _markdown(results)
    print(text)
    out = args.output or checkout_results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "load.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
