"""The shapes every workload is built from: variants, cases, workloads, and the lab
(the connections and data they share)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks.options import Sizes
from benchmarks.seed import Dataset
from benchmarks.servers import Target
from harbor_commerce.uow import CommerceWork
from harbordb import Database

if TYPE_CHECKING:
    from benchmarks.psycopg_peer import PsycopgPeer

# One operation: returns how many objects (or rows) it loaded or wrote. Every
# variant of a case must return the same number: that is checked, so no variant
# can win by doing less work.
Op = Callable[[], Awaitable[int]]


@dataclass(frozen=True)
class Variant:
    key: str  # e.g. "selectinload"; see VARIANT_LABELS
    op: Op
    concurrency: int = 1  # W6 runs `concurrency` tasks at once
    reset: Op | None = None  # untimed, after every operation (W5 deletes what it wrote)
    database: Database[CommerceWork] | None = None  # whose statements to count, when not the lab's
    # Statements no counter sees, added to the count: asyncpg sends COPY outside
    # both its query logger and SQLAlchemy's cursor.
    hidden_statements: int = 0
    raw: Any | None = None  # whose asyncpg query logger to count, when not the lab's
    # Runs once untimed before every case, not only the workload's first: a projection
    # of automatic shape learns its read's width, so its counts show the shape timed.
    prime: bool = False


@dataclass
class Case:
    label: str  # "N=100"
    params: dict[str, int]
    variants: list[Variant]
    skipped: dict[str, str] = field(default_factory=dict)  # variant key -> why


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    description: str
    unit: str  # what throughput counts: "op" or "row"
    floor: str | None  # the variant ratios are taken against
    build: Callable[[Lab], Awaitable[list[Case]]]
    scaling: bool = False  # cases are N values worth plotting against N


@dataclass
class Lab:
    """Connections and data shared by the workloads of one run."""

    target: Target
    sizes: Sizes
    dataset: Dataset
    db: Database[
        CommerceWork
    ]  # harbordb's Database on `target.url`: QueuePool, statement caches off
    raw: Any  # one asyncpg connection, statement cache off: the raw-driver variants
    tortoise: bool  # Tortoise ORM is initialised on the same database
    stack: AsyncExitStack  # closes per-workload resources (W6's engines) at the end
    notes: list[str] = field(default_factory=list)
    psycopg: PsycopgPeer | None = None  # the psycopg 3 peer, when installed (W1-W4)
    figures: dict[str, Any] = field(default_factory=dict)  # workload figures for the goals


VARIANT_LABELS = {
    "n+1": "N+1: lazyload() + awaitable_attrs per parent",
    "selectinload": "ORM selectinload",
    "joinedload": "ORM joinedload (.unique())",
    "subqueryload": "ORM subqueryload",
    "repository": "harbordb repository method",
    "repository-view": "harbordb read model (catalog_cards, history: projections) (W2, W3)",
    "projection": "harbordb.Projection in a unit of work, frozen dataclasses, shape chosen per "
    "read (stmts 1: nested aggregates; 2: one = ANY statement per level)",
    "projection-nested": "harbordb.Projection, per_level=False: always one statement (W4)",
    "projection-levels": "harbordb.Projection, per_level=True: one = ANY statement per level (W4)",
    "projection-struct": "harbordb.Projection of msgspec Structs, shape chosen per read",
    "asyncpg-in-cols": "raw asyncpg, same shape as asyncpg-in, only the projection's columns",
    "asyncpg-one": "raw asyncpg, one statement with nested array_agg(ROW(...)) (W2, W3)",
    "repository-named": "harbordb repository method, named_statements=True (W1, W2, W3)",
    "projection-named": "harbordb.Projection, named_statements=True (W2, W3)",
    "asyncpg-in-named": "raw asyncpg, same shape as asyncpg-in, its statement cache on (100)",
    "core-in": "Core select, manual IN per relationship",
    "asyncpg-in": "raw asyncpg, same shape (= ANY($1) per relationship)",
    "asyncpg-json": "raw asyncpg, one query with json_agg (the floor)",
    "tortoise": "Tortoise ORM prefetch_related",
    "psycopg-selectinload": "ORM selectinload on psycopg 3 (prepare_threshold=None)",
    "psycopg-core-in": "core-in on psycopg 3 (prepare_threshold=None)",
    "psycopg-in": "raw psycopg 3, same statements as asyncpg-in (= ANY(%s) array binds)",
    "orm-add_all": "ORM session.add_all + commit",
    "core-insert": "Core insert() with a list (insertmanyvalues)",
    "repository-copy": "harbordb repository COPY path",
    "asyncpg-copy": "raw asyncpg copy_records_to_table (the floor)",
    "queuepool-direct": "QueuePool, direct to PostgreSQL (harbordb's FIFO admission)",
    "queuepool-direct-sqlalchemy-wait": "QueuePool, direct, SQLAlchemy's own pool wait (before)",
    "nullpool-pgbouncer": "NullPool through PgBouncer",
    "queuepool-pgbouncer": "QueuePool through PgBouncer",
    "asyncpg": "raw asyncpg: BEGIN; the case's statements; ROLLBACK (statement cache off)",
    "asyncpg-read-only": "raw asyncpg: the same with BEGIN READ ONLY",
    "sqlalchemy-session": "SQLAlchemy AsyncSession alone: read-only connection, statements, close",
    "uow-read-only": "harbordb: async with db.unit_of_work(read_only=True) around the statements",
    "uow-timeout": "the same with statement_timeout=5 (a set_config statement when it starts)",
    "uow-session": "the same, the block taking uow.session and sending nothing (empty case)",
    "primary-alone": "read-only units of work on the primary (no replicas configured)",
    "primary+replica": "the same with one streaming standby (Database(replicas=[...]))",
    "replica-token": "the same with a read-your-writes token the standby has replayed",
}
