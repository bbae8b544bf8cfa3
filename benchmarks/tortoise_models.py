"""Tortoise ORM models over harbordb's tables, for the peer rows of W2 and W3.

They declare every column the SQLAlchemy models load, so both ORMs fetch and
build the same data. The schema itself comes from harbordb's migrations.
Tortoise wants one primary-key field; order_items' key is (order_id,
variant_id), so its `order` foreign key stands in for it (reads only).
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class TortoiseCustomer(Model):
    id = fields.BigIntField(primary_key=True)
    email = fields.CharField(max_length=320)
    name = fields.CharField(max_length=200)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    orders: fields.ReverseRelation[TortoiseOrder]

    class Meta:
        table = "customers"


class TortoiseProduct(Model):
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=200)
    description = fields.TextField()
    archived_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    tags: fields.ManyToManyRelation[TortoiseTag] = fields.ManyToManyField(
        "bench.TortoiseTag",
        related_name="products",
        through="product_tags",
        backward_key="product_id",
        forward_key="tag_id",
    )
    variants: fields.ReverseRelation[TortoiseVariant]

    class Meta:
        table = "products"


class TortoiseTag(Model):
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=100)

    class Meta:
        table = "tags"


class TortoiseVariant(Model):
    id = fields.BigIntField(primary_key=True)
    product: fields.ForeignKeyRelation[TortoiseProduct] = fields.ForeignKeyField(
        "bench.TortoiseProduct", related_name="variants", source_field="product_id"
    )
    sku = fields.CharField(max_length=64)
    name = fields.CharField(max_length=200)
    price_cents = fields.IntField()
    stock_qty = fields.IntField()
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "variants"


class TortoiseOrder(Model):
    id = fields.BigIntField(primary_key=True)
    customer: fields.ForeignKeyRelation[TortoiseCustomer] = fields.ForeignKeyField(
        "bench.TortoiseCustomer", related_name="orders", source_field="customer_id"
    )
    order_ref = fields.CharField(max_length=100)
    status = fields.CharField(max_length=20)  # a PostgreSQL enum; asyncpg reads it as text
    total_cents = fields.IntField()
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    items: fields.ReverseRelation[TortoiseOrderItem]

    class Meta:
        table = "orders"


class TortoiseOrderItem(Model):
    order: fields.ForeignKeyRelation[TortoiseOrder] = fields.ForeignKeyField(
        "bench.TortoiseOrder", related_name="items", source_field="order_id", primary_key=True
    )
    variant: fields.ForeignKeyRelation[TortoiseVariant] = fields.ForeignKeyField(
        "bench.TortoiseVariant", related_name="order_items", source_field="variant_id"
    )
    qty = fields.IntField()
    unit_price_cents = fields.IntField()

    class Meta:
        table = "order_items"
