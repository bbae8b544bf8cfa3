"""Customers 1..N with their orders: issue 2's `nplus1` workload and W4 (scaling).

Each loader returns customers + orders loaded, which every variant must agree on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import msgspec
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import joinedload, lazyload, selectinload, subqueryload

from benchmarks import psycopg_peer, psycopg_raw
from benchmarks.core import Case, Lab, Op, Variant, Workload
from harbor_commerce.models import Customer, Order, OrderStatus
from harbordb import Projection

_CUSTOMERS = Customer.__table__
_ORDERS = Order.__table__


def _first(n: int) -> Select[Customer]:
    return select(Customer).where(Customer.id <= n).order_by(Customer.id)


def _count(customers: Any) -> int:
    return len(customers) + sum(len(customer.orders) for customer in customers)


def nplus1(lab: Lab, n: int) -> Op:
    """What async code does by accident: every relationship is lazy="raise", so the
    query must ask for lazy loading, and each parent then awaits its own query."""

    async def op() -> int:
        async with lab.db.session() as session:
            customers = (await session.scalars(_first(n).options(lazyload(Customer.orders)))).all()
            loaded = len(customers)
            for customer in customers:
                loaded += len(await customer.awaitable_attrs.orders)
        return loaded

    return op


def orm(lab: Lab, n: int, strategy: Any) -> Op:
    """One ORM load plan (selectinload, joinedload or subqueryload) for the orders."""
    statement = _first(n).options(strategy(Customer.orders))

    async def op() -> int:
        async with lab.db.session() as session:
            result = await session.scalars(statement)
            if strategy is joinedload:
                result = result.unique()
            return _count(result.all())

    return op


def repository(lab: Lab, n: int) -> Op:
    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            customers = await uow.customers.list(
                Customer.id <= n, order_by=("id",), load=("orders",)
            )
            return _count(customers)

    return op


def core_in(lab: Lab, n: int) -> Op:
    parents = select(_CUSTOMERS).where(_CUSTOMERS.c.id <= n).order_by(_CUSTOMERS.c.id)

    async def op() -> int:
        async with lab.db.engine.connect() as connection:
            customers = (await connection.execute(parents)).all()
            children = (
                select(_ORDERS)
                .where(_ORDERS.c.customer_id.in_([row.id for row in customers]))
                .order_by(_ORDERS.c.customer_id, _ORDERS.c.id)
            )
            orders: dict[int, list[Any]] = defaultdict(list)
            for row in await connection.execute(children):
                orders[row.customer_id].append(row)
        return len(customers) + sum(len(orders[row.id]) for row in customers)

    return op


def asyncpg_in(lab: Lab, n: int) -> Op:
    async def op() -> int:
        async with lab.raw.transaction():
            customers = await lab.raw.fetch("SELECT * FROM customers WHERE id <= $1 ORDER BY id", n)
            orders: dict[int, list[Any]] = defaultdict(list)
            for row in await lab.raw.fetch(
                "SELECT * FROM orders WHERE customer_id = ANY($1::bigint[]) "
                "ORDER BY customer_id, id",
                [row["id"] for row in customers],
            ):
                orders[row["customer_id"]].append(row)
        return len(customers) + sum(len(orders[row["id"]]) for row in customers)

    return op


_JSON = """
SELECT c.*,
       (SELECT coalesce(json_agg(o ORDER BY o.id), '[]')
          FROM orders o WHERE o.customer_id = c.id) AS orders
  FROM customers c
 WHERE c.id <= $1
 ORDER BY c.id
"""


def asyncpg_json(lab: Lab, n: int) -> Op:
    async def op() -> int:
        customers = await lab.raw.fetch(_JSON, n)
        return len(customers) + sum(len(json.loads(row["orders"])) for row in customers)

    return op


@dataclass(frozen=True, slots=True)
class OrderRow:
    """Every column of an order, as `asyncpg-in` reads them (``SELECT *``)."""

    id: int
    customer_id: int
    order_ref: str
    status: OrderStatus
    total_cents: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CustomerRow:
    id: int
    email: str
    name: str
    created_at: datetime
    updated_at: datetime
    orders: tuple[OrderRow, ...]


class OrderStruct(msgspec.Struct, frozen=True, gc=False):
    """`OrderRow` as a msgspec Struct: built in C."""

    id: int
    customer_id: int
    order_ref: str
    status: OrderStatus
    total_cents: int
    created_at: datetime
    updated_at: datetime


class CustomerStruct(msgspec.Struct, frozen=True):
    id: int
    email: str
    name: str
    created_at: datetime
    updated_at: datetime
    orders: tuple[OrderStruct, ...]


_FIRST_N_STRUCTS = Projection(
    CustomerStruct, Customer, orders=Projection(OrderStruct, Order)
).where(lambda customer: customer.id <= bindparam("n"))

_FIRST_N = Projection(CustomerRow, Customer, orders=Projection(OrderRow, Order)).where(
    lambda customer: customer.id <= bindparam("n")
)


def projection(lab: Lab, n: int, *, per_level: bool | None = None, structs: bool = False) -> Op:
    """`harbordb.Projection` in a unit of work. `per_level` False: one statement, each
    customer's orders nested as an array of records; True: customers, then their
    orders with one ``= ANY`` statement; None: the shape the projection chooses per
    read (a projection of its own per N, so one N's reads do not teach another's).
    `structs`: msgspec Structs instead of frozen dataclasses."""
    read = _FIRST_N_STRUCTS if structs else _FIRST_N
    if per_level is None:
        read = read.where()  # its own record of the widths it read

    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            customers = await read.all(uow, order_by=("id",), params={"n": n}, per_level=per_level)
            return len(customers) + sum(len(customer.orders) for customer in customers)

    return op


def _variants(lab: Lab, n: int, keys: tuple[str, ...]) -> list[Variant]:
    makers = {
        "n+1": lambda: nplus1(lab, n),
        "selectinload": lambda: orm(lab, n, selectinload),
        "joinedload": lambda: orm(lab, n, joinedload),
        "subqueryload": lambda: orm(lab, n, subqueryload),
        "repository": lambda: repository(lab, n),
        "projection": lambda: projection(lab, n),
        "projection-nested": lambda: projection(lab, n, per_level=False),
        "projection-levels": lambda: projection(lab, n, per_level=True),
        "projection-struct": lambda: projection(lab, n, structs=True),
        "core-in": lambda: core_in(lab, n),
        "asyncpg-in": lambda: asyncpg_in(lab, n),
        "asyncpg-json": lambda: asyncpg_json(lab, n),
    }
    automatic = {"projection", "projection-struct"}  # shape chosen per read: primed per case
    return [Variant(key, makers[key](), prime=key in automatic) for key in keys]


async def _nplus1_cases(lab: Lab) -> list[Case]:
    return [
        Case(f"N={n}", {"n": n}, _variants(lab, n, ("n+1", "selectinload")))
        for n in lab.sizes.nplus1_n
    ]


NPLUS1 = Workload(
    key="nplus1",
    title="N+1 against selectinload",
    description=(
        "Customers 1..N (each with 5 orders of 3 items) loaded with their orders: "
        "N+1 as async code does it by accident (lazyload() + awaitable_attrs per "
        "customer) against selectinload."
    ),
    unit="op",
    floor="selectinload",
    build=_nplus1_cases,
    scaling=True,
)


async def _scale_cases(lab: Lab) -> list[Case]:
    keys: tuple[str, ...] = (
        "n+1",
        "selectinload",
        "joinedload",
        "subqueryload",
        "repository",
        "projection",
        "projection-nested",
        "projection-levels",
        "projection-struct",
        "core-in",
        "asyncpg-in",
        "asyncpg-json",
    )
    cases = []
    for n in lab.sizes.scale_n:
        case = Case(f"N={n}", {"n": n}, [])
        keys_here = keys
        if n > lab.sizes.nplus1_max:
            keys_here = keys[1:]
            case.skipped["n+1"] = (
                f"measured up to N={lab.sizes.nplus1_max} only (--nplus1-max): "
                "beyond, it would dominate the run time"
            )
        case.variants = _variants(lab, n, keys_here)
        psycopg_peer.add(
            case,
            lab,
            partial(orm, n=n, strategy=selectinload),
            partial(core_in, n=n),
            partial(psycopg_raw.w4_in, n=n),
        )
        cases.append(case)
    return cases


W4 = Workload(
    key="W4",
    title="scaling: N customers with their orders",
    description=(
        "Customers 1..N with their orders (5 each), N from 10 to 10,000: every loading "
        "strategy against N."
    ),
    unit="op",
    floor="asyncpg-json",
    build=_scale_cases,
    scaling=True,
)
