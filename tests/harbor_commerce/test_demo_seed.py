"""``harbor-commerce seed``: the demo data in a fresh migrated database, once."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from alembic import command

from harbor_commerce.models import Customer, Product, Tag, Variant
from harbor_commerce.uow import commerce_database
from harbordb.testing.cluster import PostgresCluster
from harbordb.testing.plugin import alembic_config, scratch_database

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


async def _seed(url: str, *args: str) -> tuple[int, str]:
    code = "from harbor_commerce.cli import main; raise SystemExit(main())"
    done = await anyio.run_process(
        [sys.executable, "-c", code, "seed", "--database-url", url, *args], check=False
    )
    return done.returncode, done.stderr.decode()


async def test_seed_writes_the_demo_shop_once(pg_cluster: PostgresCluster) -> None:
    async with scratch_database(pg_cluster, "demo") as url:
        await anyio.to_thread.run_sync(command.upgrade, alembic_config(url, ALEMBIC_INI), "head")
        code, output = await _seed(url, "--products", "70", "--customers", "2")
        assert code == 0, output
        assert "seeded 70 products, 210 variants" in output
        async with commerce_database(url) as db, db.unit_of_work(read_only=True) as uow:
            assert await uow.products.count() == 70
            assert await uow.variants.count() == 210
            assert await uow.customers.count(Customer.email.startswith("demo-")) == 2
            assert await uow.tags.count() == 12
            assert await uow.variants.count(Variant.stock_qty < 0) == 0
            assert await uow.products.count(Product.tags.any(Tag.name == "brass")) > 0

        code, output = await _seed(url, "--products", "5")
        assert code == 1
        assert "already there" in output
        async with commerce_database(url) as db, db.unit_of_work(read_only=True) as uow:
            assert await uow.products.count() == 70

        code, output = await _seed("postgresql://nobody@/", "--products", "5")
        assert code == 2
