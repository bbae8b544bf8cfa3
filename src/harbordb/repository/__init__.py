"""`Repository[ModelT]`: reads and writes of one model, with no lazy loads.

A repository is configured by class attributes and works through the
`AsyncSession` it is given. It flushes but never commits: the unit of work
owns the transaction.

    class OrderRepository(Repository[Order]):
        model = Order
        load = ("customer", "items.variant.product")
        order_by = ("-created_at",)

The package, one seam per module:

- `plans`: load plans (``load``), compiled once (joined many-to-ones, one
  ``= ANY(:keys)`` statement per collection), checked when the class is defined.
- `loading`: runs a plan's collection statements after its parents load.
- `direct`, `nested`, `objects`: plans run on the driver, a `get` or a page's
  collections nested in one statement, ORM objects built from the rows.
- `ordering`: orderings (``order_by``), always made total by the primary key.
- `filters`: `contains`, `any_of`, `escape_like` for user input.
- `base`: `RepositoryBase`, the configuration and the building blocks
  (`select_loaded`, `sort_keys`, `order_clauses`).
- `reads`, `pages`, `writes`: the methods; `pages` also holds the public
  blocks for a service's own keyset pages and read models (`keyset_query`,
  `windowed`, `RowBuilder`, `keyset_page`, `fetch_window`, `page_total`).
"""

from __future__ import annotations

from harbordb.repository.base import ModelT, RepositoryBase
from harbordb.repository.filters import any_of, contains, escape_like
from harbordb.repository.ordering import Ordering
from harbordb.repository.pages import PageMethods, RowBuilder, keyset_query, windowed
from harbordb.repository.plans import LoadPlan
from harbordb.repository.reads import ReadMethods
from harbordb.repository.writes import WriteMethods

__all__ = [
    "LoadPlan",
    "Ordering",
    "Repository",
    "RepositoryBase",
    "RowBuilder",
    "any_of",
    "contains",
    "escape_like",
    "keyset_query",
    "windowed",
]


class Repository(ReadMethods[ModelT], PageMethods[ModelT], WriteMethods[ModelT]):
    """Reads, pages and writes of one mapped model through one `AsyncSession`.

    Subclasses set `model` and may override the other class attributes (see
    `RepositoryBase`); every method also takes per-call overrides. Methods
    flush, never commit. A service's own methods build on `select_loaded`,
    `sort_keys`, `order_clauses`, `keyset_query`, `keyset_page`,
    `windowed`, `fetch_window` and `page_total`.
    """
