"""Alembic environment of the library test domain: harbordb's helper, as a service writes it.

Its version table is ``alembic_version_library`` and autogenerate compares the
library's tables only, so it shares a database with Harbor Commerce's schema.
"""

from __future__ import annotations

from collections.abc import Mapping

from tests.library.models import Base

from harbordb.migrations import run_migrations


def _ours(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    return type_ != "table" or name in Base.metadata.tables


run_migrations(Base.metadata, version_table="alembic_version_library", include_name=_ours)
