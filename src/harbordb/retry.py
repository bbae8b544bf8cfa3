"""Re-run a transaction function when it loses a race (`Retryable`).

A serialization failure (40001) or a deadlock (40P01) rolls the whole
transaction back, so the only safe retry is of the whole function, in a new
transaction. `Database.run` does that; the loop lives here. It also re-runs
on `Unavailable` raised while the unit of work was being opened (a refused
connection, 53300 too many connections, 57P03 the server is starting): the
function had not started, so nothing was sent. Not when a wait ran out
(`Unavailable.waited`: re-running would multiply the wait), not once the
function has started, and never on `CommitUncertain` (a connection lost or a
task cancelled during COMMIT leaves unknown whether the transaction
committed: only the service knows whether its write may run twice).

Backoff is "full jitter": before re-run n (0-based) sleep a uniformly random
time in [0, min(MAX_DELAY, BASE_DELAY * 2**n)], so that transactions that
collided once spread out instead of colliding again in lockstep. The loop is
small enough that a retry library would add a dependency for every service
importing harbordb without removing any logic.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

import anyio

from harbordb.errors import (
    ConfigurationError,
    DatabaseError,
    Retryable,
    Unavailable,
)
from harbordb.uow import UnitOfWork

T = TypeVar("T")
UoWT = TypeVar("UoWT", bound=UnitOfWork)

BASE_DELAY = 0.02  # seconds: the cap of the first backoff
MAX_DELAY = 1.0  # seconds: the cap no backoff exceeds

logger = logging.getLogger("harbordb.retry")

ATTEMPT: ContextVar[int] = ContextVar("harbordb.retry.attempt", default=0)
"""Re-runs before the current attempt of `run_with_retries` (for `harbordb.observability`)."""


def backoff_delay(attempt: int, *, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to sleep before re-run number `attempt` (0 for the first re-run)."""
    return random.uniform(0.0, min(cap, base * 2.0**attempt))


async def run_with_retries(
    open_unit_of_work: Callable[[], UoWT],
    fn: Callable[[UoWT], Awaitable[T]],
    *,
    retries: int,
) -> T:
    """Run ``fn(uow)`` in a new unit of work and commit it; on `Retryable`, run again.

    At most ``1 + retries`` attempts; the last error propagates. `Unavailable`
    before `fn` started is re-run too (see the module docstring). Any other
    error propagates at once. If `fn` committed the unit of work itself, that
    commit stands.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError("retries must be a whole number >= 0")
    attempt = 0
    while True:
        uow: UoWT | None = None
        started = False
        attempt_token = ATTEMPT.set(attempt)
        try:
            async with open_unit_of_work() as uow:
                started = True
                result = await fn(uow)
                if not uow.committed:
                    await uow.commit()
            return result
        except (Retryable, Unavailable) as exc:
            if isinstance(exc, Unavailable) and (started or exc.waited):
                raise  # something may have been sent, or a wait ran out
            if attempt >= retries or (uow is not None and uow.committed):
                raise  # out of retries, or the work already committed once
            delay = backoff_delay(attempt)
            attempt += 1
            logger.info(
                "%s (SQLSTATE %s), re-running in %.3fs (retry %d of %d)",
                _reason(exc),
                exc.sqlstate,
                delay,
                attempt,
                retries,
            )
            await anyio.sleep(delay)
        finally:
            ATTEMPT.reset(attempt_token)


_CONFLICTS = {"40001", "40P01"}  # serialization failure, deadlock


def _reason(error: DatabaseError) -> str:
    if isinstance(error, Retryable):
        if error.sqlstate in _CONFLICTS:
            return "transaction conflict"
        return "prepared statement outdated by a schema change"
    return "database unavailable before the work started"
