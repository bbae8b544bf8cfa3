"""A small library domain (authors, books, chapters, tags) for harbordb's own tests.

The generic layer is tested on these models, not on Harbor Commerce's: they
have their own declarative base, their own Alembic tree and version table
(``alembic_version_library``), and their own unit of work, as a service would.
"""
