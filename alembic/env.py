"""Harbor Commerce's Alembic environment: harbordb's async helper on its models.

The URL: ``sqlalchemy.url`` if set, else HARBORDB_MIGRATION_URL, else
HARBORDB_DATABASE_URL / DATABASE_URL (see `harbordb.migrations`).
"""

from harbor_commerce.models import Base
from harbordb.migrations import run_migrations

run_migrations(Base.metadata, compare_server_default=False, transaction_per_migration=False)
