from harbordb.migrations import run_migrations

from blogsvc.models import Base

run_migrations(Base.metadata)
