"""Declarative base with a constraint naming convention and timestamp columns."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, FetchedValue, MetaData, func
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(AsyncAttrs, DeclarativeBase):
    """Base of every harbordb model.

    `AsyncAttrs` is here so the N+1 detector has something to catch: its
    `awaitable_attrs` sidesteps `lazy="raise"` one parent row at a time.
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamps:
    """`created_at` and `updated_at`, both set by the server.

    `updated_at` is maintained by the `harbordb_set_updated_at` trigger (see the
    initial migration), so raw SQL and bulk updates keep it right too.
    """

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), server_onupdate=FetchedValue()
    )
