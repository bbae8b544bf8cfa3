"""Call synchronous SQLAlchemy code that may await, in a greenlet kept for reuse.

SQLAlchemy's asyncio layer runs its synchronous core in a greenlet
(`sqlalchemy.util.greenlet_spawn`): where that code must wait for the driver,
`sqlalchemy.util.await_` switches to the greenlet's parent with the
awaitable, which the caller awaits and switches back with the result. Each
``greenlet_spawn`` starts a new greenlet, and starting and ending one cost
about 8 us of client CPU here (CPython 3.11, greenlet 3.5), where a switch
into a live greenlet and back costs under 1 us. `call` keeps finished
greenlets (per thread) and runs the next call in one of them: what a unit of
work's checkout and checkin (`harbordb.checkout`) run in.

It speaks SQLAlchemy's side of the protocol, which is not public API
(`SQLALCHEMY_PROTOCOL`: the marker attribute ``await_`` looks for on the
current greenlet; the awaitable handed to the parent by ``switch``, its result
sent back by ``switch``, its exception by ``throw``), present in SQLAlchemy
2.1 (pinned ``<2.2``); ``tests/unit/test_greenlets.py`` fails loudly if it
changes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import getcurrent, greenlet

T = TypeVar("T")

# What `sqlalchemy.util.await_` requires of the greenlet it runs in.
SQLALCHEMY_PROTOCOL = "__sqlalchemy_greenlet_provider__"

# Finished greenlets kept per thread (a greenlet cannot switch across threads).
KEEP = 32


_FINISHED = object()  # what a worker hands its caller when the call has returned or raised


class _Worker(greenlet):  # type: ignore[misc]
    """Runs one call after another; between calls it waits in `parent.switch`, holding
    nothing of the last call (its outcome is in `value` / `error` until taken)."""

    __sqlalchemy_greenlet_provider__ = True

    def __init__(self) -> None:
        super().__init__(self._serve)
        self.value: Any = None
        self.error: BaseException | None = None

    def _serve(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        while True:
            try:
                self.value = fn(*args)
            except BaseException as exc:  # handed to the caller, who raises it
                self.error = exc
            del fn, args
            # Outside the try: GreenletExit, thrown in when an idle worker is
            # collected, ends the loop.
            fn, args = self.parent.switch(_FINISHED)


class _Idle(threading.local):
    def __init__(self) -> None:
        self.workers: list[_Worker] = []


_idle = _Idle()


async def call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` where ``sqlalchemy.util.await_`` works, as `greenlet_spawn` runs it."""
    workers = _idle.workers
    worker = workers.pop() if workers else _Worker()
    current = getcurrent()
    worker.parent = current
    worker.gr_context = current.gr_context  # the caller's context variables
    result = worker.switch(fn, args)
    while result is not _FINISHED:  # an awaitable from `await_`
        try:
            value = await result
        except BaseException:
            result = worker.throw(*sys.exc_info())
        else:
            result = worker.switch(value)
    value, error = worker.value, worker.error
    worker.value = worker.error = worker.gr_context = None
    if len(workers) < KEEP:
        workers.append(worker)
    if error is not None:
        try:
            raise error
        finally:
            del error
    return value  # type: ignore[no-any-return]
