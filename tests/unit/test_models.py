"""Mapper configuration checks of the library's models that need no database."""

from __future__ import annotations

from sqlalchemy.orm import RelationshipProperty, configure_mappers
from tests.library.models import Base


def all_relationships() -> list[RelationshipProperty[object]]:
    configure_mappers()
    return [rel for mapper in Base.registry.mappers for rel in mapper.relationships]


def test_every_relationship_is_lazy_raise_with_back_populates() -> None:
    relationships = all_relationships()
    assert len(relationships) >= 6  # the library's models have 6 relationship sides
    for rel in relationships:
        assert rel.lazy == "raise", f"{rel} must be lazy='raise'"
        assert rel.back_populates, f"{rel} must declare back_populates"
        assert rel._reverse_property, f"{rel} has no reverse side"


def test_every_foreign_key_is_indexed() -> None:
    for table in Base.metadata.tables.values():
        indexed = {tuple(col.name for col in index.columns)[:1] for index in table.indexes} | {
            tuple(col.name for col in table.primary_key.columns)[:1]
        }
        for fk in table.foreign_keys:
            assert (fk.parent.name,) in indexed, f"{table.name}.{fk.parent.name} has no index"
