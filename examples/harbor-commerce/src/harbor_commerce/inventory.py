"""Stock reservations, their expiry, and checkout: never sell what is not there.

    inventory = Inventory(db, cache=cache)
    held = await inventory.reserve(variant_id, 2, "cart-7f3a")   # at checkout start
    order = await inventory.checkout("cart-7f3a", customer_id)   # on payment
    await inventory.release(held.id)                             # or: the cart is abandoned

Each operation runs in a unit of work of its own (through `Database.run`, so a
deadlock or serialization failure re-runs it), or inside the caller's when
given ``uow=``: it then writes in the caller's transaction, adds its cache
invalidation as an after-commit callback, and leaves the commit to the caller.
When an operation refuses (`InsufficientStock`, `ReservationExpired`,
`CheckoutFailed`, `NotFound`), nothing it wrote remains and the caller's
transaction is still usable. A database error (say `ForeignKeyViolation` for
an unknown customer) aborts the transaction as always: wrap the call in
``uow.savepoint()`` to carry on after one.

An ``order_ref`` names one checkout attempt: at most one reservation per
(order_ref, variant) exists (a unique constraint), and at most one order. Once
a reservation expired or was released, its order_ref cannot reserve that
variant again; start a new attempt with a new order_ref. A reservation made
for an order_ref after its checkout is not added to that order: it expires.

The statements are written out below rather than built from repository
methods where their shape is the point: which row is locked, when, and for
how long. They bypass the session's identity map: objects the caller already
loaded in the same unit of work are not refreshed by them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar, Unpack, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    Interval,
    String,
    Table,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.expression import Executable

from harbor_commerce.cache import CatalogCache
from harbor_commerce.models import (
    Order,
    OrderItem,
    Product,
    ReservationStatus,
    StockReservation,
    Variant,
)
from harbor_commerce.uow import CommerceWork
from harbordb import Database
from harbordb.errors import HarborError, InvalidInput, NotFound, translating
from harbordb.inputs import check_bigint, check_text
from harbordb.repository import any_of
from harbordb.uow import UnitOfWorkOptions

__all__ = [
    "DEFAULT_TTL",
    "MAX_TTL",
    "MIN_TTL",
    "CheckoutFailed",
    "InsufficientStock",
    "Inventory",
    "Reservation",
    "ReservationExpired",
]

DEFAULT_TTL = timedelta(minutes=15)
MIN_TTL = timedelta(seconds=1)
MAX_TTL = timedelta(days=7)
MAX_QTY = 2**31 - 1  # the qty columns are PostgreSQL integers
MAX_BATCH_SIZE = 10_000
ORDER_REF_LENGTH = 100  # String(100) on stock_reservations and orders

T = TypeVar("T")

_reservations = cast(Table, StockReservation.__table__)
_variants = cast(Table, Variant.__table__)
_products = cast(Table, Product.__table__)

_ACTIVE = ReservationStatus.ACTIVE
_CHECKED_OUT = ReservationStatus.CHECKED_OUT


# -- errors ---------------------------------------------------------------------


class InsufficientStock(HarborError):
    """Fewer units are in stock than were asked for; nothing was reserved."""

    def __init__(self, variant_id: int, requested: int, available: int) -> None:
        super().__init__(
            f"variant {variant_id}: {requested} requested, {available} available; nothing reserved"
        )
        self.variant_id = variant_id
        self.requested = requested
        self.available = available


class ReservationExpired(HarborError):
    """Reservations of this order_ref expired or were released; nothing was written.

    `lapsed` maps each such variant id to the reservation's status (an
    active reservation past its `expires_at` counts as expired). Raised by
    `checkout`, and by `reserve` when the (order_ref, variant) reservation
    already lapsed: start again with a new order_ref.
    """

    def __init__(self, order_ref: str, lapsed: Mapping[int, ReservationStatus]) -> None:
        details = ", ".join(f"variant {vid} {lapsed[vid].value}" for vid in sorted(lapsed))
        super().__init__(f"reservation(s) of this order_ref no longer hold stock: {details}")
        self.order_ref = order_ref
        self.lapsed = dict(lapsed)


class CheckoutFailed(HarborError):
    """Checkout refused for a reason other than lapsed reservations; nothing was written."""

    def __init__(self, message: str, *, order_ref: str) -> None:
        super().__init__(message)
        self.order_ref = order_ref


# -- results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reservation:
    """A stock reservation as `reserve` left it.

    `created` is False when an earlier identical request (same order_ref and
    variant) had already made it; then `qty` is that request's quantity.
    """

    id: int
    variant_id: int
    order_ref: str
    qty: int
    status: ReservationStatus
    expires_at: datetime
    customer_id: int | None
    created: bool


# -- the service ------------------------------------------------------------------


class Inventory:
    """Reserve, release, expire and check out stock through one `Database`.

    `cache` is told which variants and products changed stock after each
    commit that changed it. `retries` and `options` (timeouts, isolation
    level, ...; see `Database.unit_of_work`) apply to the units of work the
    operations open themselves, not to a caller's ``uow=``.
    """

    def __init__(
        self,
        db: Database[CommerceWork],
        *,
        cache: CatalogCache | None = None,
        retries: int = 3,
        **options: Unpack[UnitOfWorkOptions],
    ) -> None:
        self.db = db
        self.cache = cache
        self.retries = retries
        self.options = options

    async def _in_unit_of_work(
        self, uow: CommerceWork | None, fn: Callable[[CommerceWork], Awaitable[T]]
    ) -> T:
        if uow is not None:
            return await fn(uow)
        return await self.db.run(fn, retries=self.retries, **self.options)

    def _invalidate_after_commit(
        self, uow: CommerceWork, variant_ids: Collection[int], product_ids: Collection[int]
    ) -> None:
        cache = self.cache
        if cache is None or not variant_ids:
            return
        variants, products = frozenset(variant_ids), frozenset(product_ids)
        uow.after_commit(lambda: cache.invalidate(variant_ids=variants, product_ids=products))

    # -- reserve ------------------------------------------------------------------

    async def reserve(
        self,
        variant_id: int,
        qty: int,
        order_ref: str,
        *,
        ttl: timedelta | float = DEFAULT_TTL,
        customer_id: int | None = None,
        uow: CommerceWork | None = None,
    ) -> Reservation:
        """Hold `qty` units of a variant for `order_ref` until ``now() + ttl`` (server clock).

        Idempotent per (order_ref, variant_id): a repeated request, even a
        concurrent one, returns the existing reservation (``created=False``;
        its status is active, or checked out once the order exists) and takes
        no more stock. Raises `InsufficientStock` (with what is
        available), `NotFound` (unknown variant or archived product),
        `ReservationExpired` (this order_ref's reservation of the variant
        already lapsed), and `InvalidInput` (a ValueError) for a bad argument, before any SQL.

        Two statements when it reserves or finds the existing reservation,
        three when stock is short after all (see the module's statement notes).
        """
        _check_id("variant_id", variant_id)
        _check_qty(qty)
        _check_order_ref(order_ref)
        if customer_id is not None:
            _check_id("customer_id", customer_id)
        hold = _check_ttl(ttl)

        async def work(uow: CommerceWork) -> Reservation:
            return await self._reserve(uow, variant_id, qty, order_ref, hold, customer_id)

        return await self._in_unit_of_work(uow, work)

    async def _reserve(
        self,
        uow: CommerceWork,
        variant_id: int,
        qty: int,
        order_ref: str,
        ttl: timedelta,
        customer_id: int | None,
    ) -> Reservation:
        session = uow.session
        with translating():
            claimed = (
                await session.execute(
                    _claim_statement(variant_id, qty, order_ref, ttl, customer_id)
                )
            ).one_or_none()
            if claimed is None:
                return await self._existing_reservation(uow, variant_id, qty, order_ref)
            taken = (await session.execute(_take_stock_statement(variant_id, qty))).one_or_none()
            if taken is None:
                # Stock ran out between the claim's snapshot and the row lock: undo the
                # claim (the caller's transaction stays usable) and report what is left.
                available = (
                    await session.execute(_unclaim_statement(claimed.id, variant_id))
                ).scalar_one()
                raise InsufficientStock(variant_id, qty, int(available or 0))
        self._invalidate_after_commit(uow, {variant_id}, {taken.product_id})
        return Reservation(
            id=claimed.id,
            variant_id=variant_id,
            order_ref=order_ref,
            qty=qty,
            status=claimed.status,
            expires_at=claimed.expires_at,
            customer_id=customer_id,
            created=True,
        )

    async def _existing_reservation(
        self, uow: CommerceWork, variant_id: int, qty: int, order_ref: str
    ) -> Reservation:
        """Why the claim inserted nothing: a reservation exists, or no live variant, or no stock."""
        with translating():
            row = (
                await uow.session.execute(_diagnose_statement(variant_id, order_ref))
            ).one_or_none()
        if row is None:
            raise NotFound(f"variant {variant_id} does not exist")
        if row.reservation_id is not None:
            if row.status in (_ACTIVE, _CHECKED_OUT):
                return Reservation(
                    id=row.reservation_id,
                    variant_id=variant_id,
                    order_ref=order_ref,
                    qty=row.qty,
                    status=row.status,
                    expires_at=row.expires_at,
                    customer_id=row.customer_id,
                    created=False,
                )
            raise ReservationExpired(order_ref, {variant_id: row.status})
        if row.archived:
            raise NotFound(f"variant {variant_id} belongs to an archived product")
        raise InsufficientStock(variant_id, qty, row.stock_qty)

    # -- release ------------------------------------------------------------------

    async def release(self, reservation_id: int, *, uow: CommerceWork | None = None) -> bool:
        """Return an active reservation's stock and mark it released.

        True if this call released it; False if it was no longer active
        (released, expired or checked out: a no-op). `NotFound` if no such
        reservation. One statement; a second only on the no-op path.
        """
        _check_id("reservation_id", reservation_id)

        async def work(uow: CommerceWork) -> bool:
            with translating():
                restored = (
                    await uow.session.execute(_release_statement(reservation_id))
                ).one_or_none()
                if restored is None:
                    exists = await uow.session.scalar(
                        select(_reservations.c.id).where(_reservations.c.id == reservation_id)
                    )
                    if exists is None:
                        raise NotFound(f"reservation {reservation_id} does not exist")
                    return False
            self._invalidate_after_commit(uow, {restored.id}, {restored.product_id})
            return True

        return await self._in_unit_of_work(uow, work)

    async def release_expired(
        self,
        *,
        batch_size: int = 500,
        max_batches: int | None = None,
        uow: CommerceWork | None = None,
    ) -> int:
        """Expire active reservations past `expires_at` and restore their stock; return how many.

        Works in batches of `batch_size`, one statement and one transaction
        each, until a batch comes back short (or after `max_batches`). Rows
        are claimed ``FOR UPDATE SKIP LOCKED``: concurrent sweepers split the
        work, and a reservation being checked out or released is left alone.
        With ``uow=``, runs exactly one batch in the caller's transaction.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise InvalidInput("batch_size must be a whole number")
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise InvalidInput(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        if max_batches is not None and (
            isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
        ):
            raise InvalidInput("max_batches must be a whole number >= 1, or None")

        async def batch(uow: CommerceWork) -> int:
            with translating():
                rows = (await uow.session.execute(_expire_statement(batch_size))).all()
            self._invalidate_after_commit(
                uow, {row.variant_id for row in rows}, {row.product_id for row in rows}
            )
            return sum(row.released for row in rows)

        if uow is not None:
            return await batch(uow)
        total, batches = 0, 0
        while max_batches is None or batches < max_batches:
            released = await self._in_unit_of_work(None, batch)
            total += released
            batches += 1
            if released < batch_size:
                break
        return total

    # -- checkout -----------------------------------------------------------------

    async def checkout(
        self, order_ref: str, customer_id: int, *, uow: CommerceWork | None = None
    ) -> Order:
        """Turn the active reservations of `order_ref` into one `Order`, at current prices.

        Locks the order_ref's reservations, then writes the order, its items
        and the reservations' new status (checked out) in one transaction.
        Checking out again returns the existing order (with ``items`` loaded,
        as on the first call). Raises `ReservationExpired` if any reservation
        lapsed, `CheckoutFailed` if the reservations or the existing order
        belong to another customer, `NotFound` if the order_ref has neither
        reservations nor an order; in each case nothing is written.

        Four statements (lock, order, items, reservations); three for a
        repeat (lock, order, items). Stock does not change at checkout, so no
        cache invalidation.
        """
        _check_order_ref(order_ref)
        _check_id("customer_id", customer_id)

        async def work(uow: CommerceWork) -> Order:
            return await self._checkout(uow, order_ref, customer_id)

        return await self._in_unit_of_work(uow, work)

    async def _checkout(self, uow: CommerceWork, order_ref: str, customer_id: int) -> Order:
        with translating():
            held = (await uow.session.execute(_lock_order_statement(order_ref))).all()
        if not held or any(row.status == _CHECKED_OUT for row in held):
            return await _existing_order(uow, order_ref, customer_id, reserved=bool(held))
        lapsed = {
            row.variant_id: ReservationStatus.EXPIRED if row.status == _ACTIVE else row.status
            for row in held
            if row.status != _ACTIVE or row.lapsed
        }
        if lapsed:
            raise ReservationExpired(order_ref, lapsed)
        if any(row.customer_id not in (None, customer_id) for row in held):
            raise CheckoutFailed(
                "the reservations of this order_ref belong to another customer",
                order_ref=order_ref,
            )
        items = [
            OrderItem(variant_id=row.variant_id, qty=row.qty, unit_price_cents=row.price_cents)
            for row in held
        ]
        order = Order(
            customer_id=customer_id,
            order_ref=order_ref,
            total_cents=sum(item.qty * item.unit_price_cents for item in items),
            items=items,
        )
        await uow.orders.add(order)
        await uow.reservations.update_where(
            any_of(StockReservation.id, [row.id for row in held]),
            values={"status": _CHECKED_OUT},
        )
        return order


async def _existing_order(
    uow: CommerceWork, order_ref: str, customer_id: int, *, reserved: bool
) -> Order:
    found = await uow.orders.list(order_ref=order_ref, limit=1, load=("items",))
    if not found:
        if reserved:  # checked-out reservations without their order: deleted by hand
            raise CheckoutFailed(
                "the reservations of this order_ref are checked out but its order is gone",
                order_ref=order_ref,
            )
        raise NotFound("no reservations and no order for this order_ref")
    order = found[0]
    if order.customer_id != customer_id:
        raise CheckoutFailed(
            "this order_ref was checked out by another customer", order_ref=order_ref
        )
    return order


# -- statements -------------------------------------------------------------------
#
# reserve, on success: claim, then take stock.
#   1. INSERT INTO stock_reservations ... SELECT ... FROM variants JOIN products
#      WHERE <variant live> AND stock_qty >= :qty ON CONFLICT DO NOTHING RETURNING
#      The unique (order_ref, variant_id) decides between racing identical
#      requests before any stock moves: the loser waits for the winner's
#      commit and inserts nothing. The stock test reads a snapshot without a
#      lock; it only spares a doomed insert when stock is visibly short.
#   2. UPDATE variants SET stock_qty = stock_qty - :qty WHERE id AND stock_qty >= :qty
#      The one hot-row lock, taken last, so it is held only until COMMIT.
#      Concurrent updates queue on the row and re-check the condition on the
#      newest version (READ COMMITTED), so stock never goes below zero.
# On failure: 2 found too little stock -> 3. DELETE the claim, RETURNING the stock
# left; 1 inserted nothing -> 2'. one SELECT telling an existing reservation, a
# missing or archived variant and short stock apart.


def _claim_statement(
    variant_id: int, qty: int, order_ref: str, ttl: timedelta, customer_id: int | None
) -> Executable:
    r, v, p = _reservations, _variants, _products
    live_with_stock = (
        select(
            v.c.id,
            literal(customer_id, BigInteger),
            literal(order_ref, String),
            literal(qty, Integer),
            func.now() + literal(ttl, Interval),
        )
        .join(p, p.c.id == v.c.product_id)
        .where(v.c.id == variant_id, p.c.archived_at.is_(None), v.c.stock_qty >= qty)
    )
    return (
        insert(r)
        .from_select(
            ["variant_id", "customer_id", "order_ref", "qty", "expires_at"], live_with_stock
        )
        .on_conflict_do_nothing(index_elements=["order_ref", "variant_id"])
        .returning(r.c.id, r.c.status, r.c.expires_at)
    )


def _take_stock_statement(variant_id: int, qty: int) -> Executable:
    v = _variants
    return (
        update(v)
        .where(v.c.id == variant_id, v.c.stock_qty >= qty)
        .values(stock_qty=v.c.stock_qty - qty)
        .returning(v.c.stock_qty, v.c.product_id)
    )


def _unclaim_statement(reservation_id: int, variant_id: int) -> Executable:
    r, v = _reservations, _variants
    stock_left = select(v.c.stock_qty).where(v.c.id == variant_id).scalar_subquery()
    return delete(r).where(r.c.id == reservation_id).returning(stock_left)


def _diagnose_statement(variant_id: int, order_ref: str) -> Executable:
    r, v, p = _reservations, _variants, _products
    return (
        select(
            v.c.stock_qty,
            p.c.archived_at.is_not(None).label("archived"),
            r.c.id.label("reservation_id"),
            r.c.status,
            r.c.qty,
            r.c.expires_at,
            r.c.customer_id,
        )
        .select_from(
            v.join(p, p.c.id == v.c.product_id).outerjoin(
                r, (r.c.variant_id == v.c.id) & (r.c.order_ref == order_ref)
            )
        )
        .where(v.c.id == variant_id)
    )


def _release_statement(reservation_id: int) -> Executable:
    """One statement: mark released if active, and give its qty back to the variant."""
    r, v = _reservations, _variants
    released = (
        update(r)
        .where(r.c.id == reservation_id, r.c.status == _ACTIVE)
        .values(status=ReservationStatus.RELEASED)
        .returning(r.c.variant_id, r.c.qty)
        .cte("released")
    )
    return (
        update(v)
        .where(v.c.id == released.c.variant_id)
        .values(stock_qty=v.c.stock_qty + released.c.qty)
        .returning(v.c.id, v.c.product_id)
    )


def _expire_statement(batch_size: int) -> Executable:
    """One statement per batch: claim due rows, expire them, restore stock per variant.

    Stock goes back with one UPDATE ... FROM an aggregate (several expired
    reservations of one variant add up; an UPDATE ... FROM applies only one
    joined row per target). Variant rows are locked in id order first, so
    two sweepers never deadlock on each other.
    """
    r, v = _reservations, _variants
    due = (
        select(r.c.id)
        .where(r.c.status == _ACTIVE, r.c.expires_at < func.now())
        .order_by(r.c.expires_at)
        .limit(batch_size)
        .with_for_update(of=r, skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    expired = (
        update(r)
        .where(r.c.id == due.c.id, r.c.status == _ACTIVE)
        .values(status=ReservationStatus.EXPIRED)
        .returning(r.c.variant_id, r.c.qty)
        .cte("expired")
    )
    per_variant = (
        select(
            expired.c.variant_id,
            func.count().label("released"),
            func.sum(expired.c.qty).label("qty"),
        )
        .group_by(expired.c.variant_id)
        .cte("per_variant")
    )
    locked = (
        select(v.c.id)
        .where(v.c.id == per_variant.c.variant_id)
        .order_by(v.c.id)
        .with_for_update(of=v, key_share=True)
        .cte("locked")
        .prefix_with("MATERIALIZED")
    )
    restored = (
        update(v)
        .where(v.c.id == locked.c.id, v.c.id == per_variant.c.variant_id)
        .values(stock_qty=v.c.stock_qty + per_variant.c.qty)
        .returning(v.c.id, v.c.product_id)
        .cte("restored")
    )
    return select(
        restored.c.id.label("variant_id"), restored.c.product_id, per_variant.c.released
    ).join(per_variant, per_variant.c.variant_id == restored.c.id)


def _lock_order_statement(order_ref: str) -> Executable:
    """The order_ref's reservations, locked in id order, with their variants' current prices.

    ``FOR UPDATE OF stock_reservations`` only: variants stay unlocked, so a
    checkout never queues behind reservations of the same hot variant.
    """
    r, v = _reservations, _variants
    return (
        select(
            r.c.id,
            r.c.variant_id,
            r.c.qty,
            r.c.status,
            r.c.customer_id,
            (r.c.expires_at <= func.now()).label("lapsed"),
            v.c.price_cents,
        )
        .join(v, v.c.id == r.c.variant_id)
        .where(r.c.order_ref == order_ref)
        .order_by(r.c.id)
        .with_for_update(of=r)
    )


# -- argument checks (before any SQL) ---------------------------------------------


def _check_id(name: str, value: object) -> None:
    """A positive whole number within BIGINT (an `InvalidInput`, also a ValueError)."""
    check_bigint(name, value, minimum=1)


def _check_qty(qty: object) -> None:
    if isinstance(qty, bool) or not isinstance(qty, int):
        raise InvalidInput("qty must be a whole number")
    if not 0 < qty <= MAX_QTY:
        raise InvalidInput(f"qty must be between 1 and {MAX_QTY}, got {qty}")


def _check_order_ref(order_ref: object) -> None:
    check_text("order_ref", order_ref)
    assert isinstance(order_ref, str)
    if not order_ref.strip():
        raise InvalidInput("order_ref must be a non-empty string")
    if len(order_ref) > ORDER_REF_LENGTH:
        raise InvalidInput(
            f"order_ref must be at most {ORDER_REF_LENGTH} characters, got {len(order_ref)}"
        )


def _check_ttl(ttl: object) -> timedelta:
    if isinstance(ttl, timedelta):
        value = ttl
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool) and math.isfinite(ttl):
        value = timedelta(seconds=ttl)
    else:
        raise InvalidInput("ttl must be a timedelta or a finite number of seconds")
    if not MIN_TTL <= value <= MAX_TTL:
        raise InvalidInput(f"ttl must be between {MIN_TTL} and {MAX_TTL}, got {value}")
    return value
