"""Variants with named prepared statements (``named_statements=True``), direct server only.

`repository-named` and `projection-named` run the `repository` and `projection`
variants on a second `Database` with the setting on; `asyncpg-in-named` runs
`asyncpg-in` on a raw asyncpg connection with its statement cache on (100).
Each statement is then prepared once per connection (in the warm-up) and run
in one round trip. Under ``--pgbouncer`` they are skipped: PgBouncer 1.18
tracks no prepared statements in transaction mode (harbordb refuses the
setting behind it), and no pooler that does is available here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import asyncpg

from benchmarks.core import Case, Lab, Op, Variant
from harbor_commerce.uow import commerce_database
from harbordb.db import STATEMENT_CACHE_SIZE, asyncpg_dsn

SKIPPED = (
    "named statements: direct server only (PgBouncer 1.18 tracks no prepared statements; "
    "harbordb refuses the setting behind it)"
)


_LABS: dict[int, Lab] = {}  # id of a run's lab -> the same with `db` and `raw` swapped


async def _named_lab(lab: Lab) -> Lab:
    """The lab with a named-statement `Database` and raw connection, built once per run."""
    found = _LABS.get(id(lab))
    if found is not None and found.stack is lab.stack:
        return found
    db = await lab.stack.enter_async_context(
        commerce_database(lab.target.url, pooler="none", named_statements=True)
    )
    raw = await asyncpg.connect(
        asyncpg_dsn(lab.target.url), statement_cache_size=STATEMENT_CACHE_SIZE
    )
    lab.stack.push_async_callback(raw.close)
    named = replace(lab, db=db, raw=raw)
    _LABS[id(lab)] = named
    return named


async def add_variants(lab: Lab, case: Case, builders: dict[str, Callable[[Lab], Op]]) -> None:
    """Append `<key>-named` for each builder (e.g. ``{"repository": w2_repository}``)."""
    if lab.target.via_pgbouncer:
        case.skipped.update({f"{key}-named": SKIPPED for key in builders})
        return
    named = await _named_lab(lab)
    for key, build in builders.items():
        variant = Variant(f"{key}-named", build(named), database=named.db, raw=named.raw)
        case.variants.append(variant)
