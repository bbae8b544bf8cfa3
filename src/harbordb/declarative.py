"""Helpers for a service's own declarative `Base`: harbordb needs no base class.

    from sqlalchemy import MetaData
    from sqlalchemy.orm import DeclarativeBase

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    class Post(Timestamps, Base): ...

    require_raise_loading(Base)   # once every model is imported

`Repository[ModelT]` works with any mapped class, whatever its base.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, FetchedValue, func
from sqlalchemy.orm import Mapped, mapped_column

from harbordb.errors import ConfigurationError

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names, so that Alembic autogenerate and error mapping
(`Conflict.constraint`) see the same names on every database."""


class Timestamps:
    """Mixin: `created_at` and `updated_at`, both set by the server.

    `updated_at` is marked as changed by the server on UPDATE (`FetchedValue`):
    keep it right with a trigger in your migration, so raw SQL and bulk
    updates keep it right too (Harbor Commerce's migration 0001 has one).
    """

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), server_onupdate=FetchedValue()
    )


def require_raise_loading(base: Any) -> None:
    """Raise `ConfigurationError` unless every relationship under `base` is ``lazy="raise"``.

    `base` is a declarative base class (or anything with a ``registry``). Call
    it once all models are imported, e.g. at the end of your models module or
    in a test: a relationship that may lazy-load fails under asyncio only when
    it is touched, often in production.
    """
    registry = getattr(base, "registry", None)
    if registry is None:
        raise ConfigurationError(f"{base!r} is not a declarative base (it has no registry)")
    offenders = sorted(
        f"{mapper.class_.__name__}.{relationship.key} (lazy={relationship.lazy!r})"
        for mapper in registry.mappers
        for relationship in mapper.relationships
        if relationship.lazy not in ("raise", "raise_on_sql")
    )
    if offenders:
        raise ConfigurationError(
            "relationships must be lazy='raise' (load them through a load plan): "
            + ", ".join(offenders)
        )
