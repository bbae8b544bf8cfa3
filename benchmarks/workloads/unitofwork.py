"""uow: what entering and leaving a read-only unit of work costs, against raw asyncpg.

Three cases, each with raw asyncpg (`asyncpg`, the floor: one connection,
statement cache off) doing the same work in a transaction:

- empty: ``async with db.unit_of_work(read_only=True): pass`` against
  ``BEGIN; ROLLBACK`` (and ``BEGIN READ ONLY; ROLLBACK``);
- one statement: the same with one ``SELECT 1``, against ``BEGIN READ ONLY;
  SELECT 1; ROLLBACK``;
- 50 products with their variants (250 ORM objects, ``selectinload``), against
  the same two statements raw: the exit's cost with objects loaded.

`uow-timeout` adds ``statement_timeout=5``: the settings statement
(``set_config``) that every option but READ ONLY and the isolation level costs.
A body takes the session only if it uses it (the empty one does not: a unit of
work opens its session when the block first takes it); `uow-session`, in the
empty case, takes it and sends nothing.

Beside harbordb, SQLAlchemy's own `AsyncSession` doing the same (checkout with
``postgresql_readonly``, the statements, close): what harbordb adds on top of
the stack it is built on. Client CPU (``time.thread_time`` of the event loop's
thread) is reported
beside wall time. The exit alone (``__aexit__``: ROLLBACK, close, checkin) is
measured too, with what was loaded still alive: its client CPU, and the Python
lines it executes (`_Exit`): `EXIT_FIGURES` in the run's figures, and a note.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from sqlalchemy import Select, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from benchmarks.core import Case, Lab, Op, Variant, Workload
from harbor_commerce.models import Product

PAGE = 50  # products in the objects case, each with its variants
READ_ONLY = {"postgresql_readonly": True}
# The run's figures: case -> variant -> the exit's p50 client CPU ("cpu_us") and the
# Python lines it executed ("lines").
EXIT_FIGURES = "uow_exit"

# A body gets the variant's session on request (``session()``): it returns how many
# objects (or rows) it loaded, and what it loaded, which stays alive over the exit, as
# what a service renders after the block does.
Body = Callable[[Callable[[], AsyncSession]], Awaitable[tuple[int, object]]]


async def _nothing(session: Callable[[], AsyncSession]) -> tuple[int, object]:
    return 1, None


async def _takes_session(session: Callable[[], AsyncSession]) -> tuple[int, object]:
    session()  # taken, not used
    return 1, None


_SELECT_1: Select[Any] = select(literal_column("1"))


async def _select_1(session: Callable[[], AsyncSession]) -> tuple[int, object]:
    return int((await session().execute(_SELECT_1)).scalar_one()), None


_PAGE: Select[Product] = (
    select(Product).options(selectinload(Product.variants)).order_by(Product.id).limit(PAGE)
)


async def _objects(session: Callable[[], AsyncSession]) -> tuple[int, object]:
    products = (await session().scalars(_PAGE)).all()
    return sum(1 + len(product.variants) for product in products), products


class _Exit:
    """Measures the exit alone. In timed runs: its client CPU, the cyclic garbage
    collector held off meanwhile (what it would collect is earlier operations'
    garbage). In the instrumented run (tracemalloc on, untimed): the Python lines
    it executes, counted with `sys.settrace`, which no machine load can blur: work
    per object shows as lines that grow with the objects loaded."""

    def __init__(self, samples: dict[str, list[int]]) -> None:
        self.samples = samples
        self.counting = tracemalloc.is_tracing()
        self.lines = 0

    def _trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            self.lines += 1
        return self._trace

    def __enter__(self) -> None:
        if self.counting:
            sys.settrace(self._trace)
            return
        gc.disable()
        self.started = time.thread_time_ns()

    def __exit__(self, *exc: object) -> None:
        if self.counting:
            sys.settrace(None)
            self.samples.setdefault("lines", []).append(self.lines)
            return
        elapsed = time.thread_time_ns() - self.started
        gc.enable()
        self.samples.setdefault("cpu_ns", []).append(elapsed)


def _harbordb(
    lab: Lab, body: Body, exits: dict[str, list[int]], options: dict[str, Any] | None = None
) -> Op:
    async def op() -> int:
        uow = lab.db.unit_of_work(read_only=True, **(options or {}))
        await uow.__aenter__()
        try:
            loaded, alive = await body(lambda: uow.session)
        except BaseException as exc:
            await uow.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        with _Exit(exits):
            await uow.__aexit__(None, None, None)
        del alive
        return loaded

    return op


def _session(lab: Lab, body: Body, exits: dict[str, list[int]]) -> Op:
    """SQLAlchemy alone: a session, a read-only connection, the body, close."""

    async def op() -> int:
        session = lab.db.sessionmaker()
        try:
            await session.connection(execution_options=READ_ONLY)
            loaded, alive = await body(lambda: session)
        except BaseException:
            await session.close()
            raise
        with _Exit(exits):
            await session.close()
        del alive
        return loaded

    return op


def _raw(lab: Lab, begin: str, statements: Callable[[Any], Awaitable[int]]) -> Op:
    async def op() -> int:
        raw = lab.raw
        await raw.execute(begin)
        try:
            return await statements(raw)
        finally:
            await raw.execute("ROLLBACK")

    return op


async def _raw_nothing(raw: Any) -> int:
    return 1


async def _raw_select_1(raw: Any) -> int:
    return int(await raw.fetchval("SELECT 1"))


async def _raw_objects(raw: Any) -> int:
    products = await raw.fetch("SELECT * FROM products ORDER BY id LIMIT $1", PAGE)
    variants = await raw.fetch(
        "SELECT * FROM variants WHERE product_id = ANY($1::bigint[]) ORDER BY product_id, id",
        [row["id"] for row in products],
    )
    return len(products) + len(variants)


async def _cases(lab: Lab) -> list[Case]:
    exits: dict[str, dict[str, dict[str, list[int]]]] = {}  # case -> variant -> samples

    def measured(case: str, key: str) -> dict[str, list[int]]:
        return exits.setdefault(case, {}).setdefault(key, {})

    bodies: dict[str, tuple[Body, Callable[[Any], Awaitable[int]]]] = {
        "empty": (_nothing, _raw_nothing),
        "one statement": (_select_1, _raw_select_1),
        f"{PAGE} products + variants": (_objects, _raw_objects),
    }
    cases = []
    for label, (body, raw) in bodies.items():
        variants = [
            Variant("asyncpg", _raw(lab, "BEGIN", raw)),
            Variant("asyncpg-read-only", _raw(lab, "BEGIN READ ONLY", raw)),
            Variant(
                "sqlalchemy-session", _session(lab, body, measured(label, "sqlalchemy-session"))
            ),
            Variant("uow-read-only", _harbordb(lab, body, measured(label, "uow-read-only"))),
            Variant(
                "uow-timeout",
                _harbordb(lab, body, measured(label, "uow-timeout"), {"statement_timeout": 5}),
            ),
        ]
        if body is _nothing:  # what taking the session costs a block that sends nothing
            taken = _harbordb(lab, _takes_session, measured(label, "uow-session"))
            variants.append(Variant("uow-session", taken))
        cases.append(Case(label, {}, variants))
    # The runner warms up only a workload's first case: these statements are new.
    for case in cases:
        for variant in case.variants:
            await variant.op()
    for by_variant in exits.values():
        for samples in by_variant.values():
            samples.clear()

    async def note_exits() -> None:  # runs when the lab closes, before the report
        figures: dict[str, dict[str, dict[str, float]]] = {}
        for case, by_variant in exits.items():
            for key, samples in by_variant.items():
                if samples.get("cpu_ns") and samples.get("lines"):
                    figures.setdefault(case, {})[key] = {
                        "cpu_us": round(statistics.median(samples["cpu_ns"]) / 1e3, 1),
                        "lines": samples["lines"][-1],
                    }
        if not figures:
            return
        lab.figures[EXIT_FIGURES] = figures
        lab.notes.append(
            "uow exit alone (ROLLBACK, close, checkin; client CPU p50 in us / Python lines "
            "executed): "
            + "; ".join(
                f"{case}: "
                + ", ".join(
                    f"{key} {f['cpu_us']:g} us / {f['lines']} lines" for key, f in by.items()
                )
                for case, by in figures.items()
            )
        )

    lab.stack.push_async_callback(note_exits)
    return cases


UOW = Workload(
    key="uow",
    title="entering and leaving a read-only unit of work",
    description=(
        "async with db.unit_of_work(read_only=True) around nothing, one SELECT 1, or "
        f"{PAGE} products with their variants (selectinload), against raw asyncpg's "
        "BEGIN; the same statements; ROLLBACK, and SQLAlchemy's AsyncSession alone."
    ),
    unit="op",
    floor="asyncpg",
    build=_cases,
)
