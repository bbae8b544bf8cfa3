"""Harbor's demo data, and the ``harbor-commerce seed`` command that writes it.

A small shop to click through: products named from a word list, each with
three variants and up to three of a dozen tags, and demo customers
``demo-1@example.com`` ... Seeding refuses a database that already has the
demo customers, so running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from harbor_commerce.models import Customer, Product, Tag, Variant
from harbor_commerce.uow import CommerceWork, commerce_database
from harbordb import Database, HarborError

TAGS = ("brass", "canvas", "cedar", "copper", "galley", "deck", "rope", "lantern", "oilskin",
        "nautical", "gift", "sale")  # fmt: skip
_ADJECTIVES = ("Brass", "Canvas", "Cedar", "Copper", "Salt", "Tidal", "Harbor", "Storm", "Quay",
               "Slate", "Indigo", "Maple")  # fmt: skip
_NOUNS = ("lantern", "kettle", "compass", "bell", "cleat", "hook", "rope", "jacket", "mug",
          "chart", "blanket", "clock")  # fmt: skip
_SIZES = ("small", "medium", "large")
BATCH = 50  # products per transaction


@dataclass(frozen=True)
class DemoSummary:
    products: int
    variants: int
    tags: int
    customers: list[int]  # their ids, for tokens


class AlreadySeeded(HarborError):
    """The database already holds the demo data."""


def demo_email(n: int) -> str:
    return f"demo-{n}@example.com"


async def seed_demo(
    db: Database[CommerceWork],
    *,
    products: int = 200,
    customers: int = 3,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Write the demo shop; `progress(n)` after every batch of n products."""
    if products < 0 or customers < 1:
        raise ValueError("products must be >= 0 and customers >= 1")
    rng = random.Random(seed)
    async with db.unit_of_work() as uow:
        if await uow.customers.exists(email=demo_email(1)):
            raise AlreadySeeded("the demo data is already there (customer demo-1@example.com)")
        tags = [Tag(name=name) for name in TAGS]
        people = [
            Customer(email=demo_email(n), name=f"Demo customer {n}")
            for n in range(1, customers + 1)
        ]
        uow.session.add_all([*tags, *people])
        await uow.commit()
    customer_ids = [person.id for person in people]
    done = 0
    while done < products:
        size = min(BATCH, products - done)
        async with db.unit_of_work() as uow:
            batch = [_product(rng, done + i, tags) for i in range(size)]
            uow.session.add_all(batch)
            await uow.commit()
        done += size
        if progress is not None:
            progress(size)
    return DemoSummary(products, products * len(_SIZES), len(tags), customer_ids)


def _product(rng: random.Random, n: int, tags: list[Tag]) -> Product:
    name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {n + 1}"
    sku = f"DEMO-{n + 1:05d}"
    return Product(
        name=name,
        description=f"The {name.lower()}, from the demo catalog.",
        variants=[
            Variant(
                sku=f"{sku}-{size[0].upper()}",
                name=size,
                price_cents=rng.randrange(500, 20_000, 50),
                stock_qty=rng.randrange(0, 40),
            )
            for size in _SIZES
        ],
        tags=rng.sample(tags, rng.randrange(0, 4)),
    )


def add_seed_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``harbor-commerce seed``: the demo data, with a progress bar."""
    parser = subparsers.add_parser(
        "seed",
        help="write Harbor's demo data (products, variants, tags, demo customers)",
        description="Write Harbor's demo data into a migrated database. Exit codes: 0 done, "
        "1 the demo data is already there, 2 usage or configuration error, 3 a database error.",
    )
    parser.add_argument("--database-url", help="PostgreSQL URL (default: HARBORDB_DATABASE_URL)")
    parser.add_argument("--products", type=int, default=200, help="how many (default 200)")
    parser.add_argument("--customers", type=int, default=3, help="how many (default 3)")
    parser.set_defaults(handler=_seed_command)


def _seed_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from harbordb import ConfigurationError, DatabaseError

    console = Console(stderr=True)

    async def run() -> DemoSummary:
        async with commerce_database(args.database_url) as db:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("products", total=args.products)
                return await seed_demo(
                    db,
                    products=args.products,
                    customers=args.customers,
                    progress=lambda n: bar.advance(task, n),
                )

    try:
        summary = asyncio.run(run())
    except AlreadySeeded as exc:
        console.print(f"[yellow]{exc}[/]")
        return 1
    except (ConfigurationError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    except DatabaseError as exc:
        console.print(f"[red]database error: {exc}[/]")
        return 3
    console.print(
        f"seeded {summary.products} products, {summary.variants} variants, {summary.tags} tags, "
        f"customers {summary.customers}"
    )
    return 0
