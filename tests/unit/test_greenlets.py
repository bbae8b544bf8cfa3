"""`harbordb.greenlets.call`: SQLAlchemy's greenlet protocol, in greenlets kept for reuse.

These tests pin what `call` relies on in SQLAlchemy (non-public): ``await_``
finds the marker attribute on the current greenlet, hands the awaitable to
the parent, and gets the result (or the exception) back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import weakref

import pytest
from greenlet import getcurrent
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.util import await_, greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from harbordb import greenlets

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def _echo(value: str) -> str:
    await asyncio.sleep(0)
    return value


async def _fail() -> None:
    await asyncio.sleep(0)
    raise LookupError("from the driver")


def _awaits_twice(value: str) -> str:
    return await_(_echo(value)) + await_(_echo(value))


async def test_the_protocol_marker_is_sqlalchemys() -> None:
    def marked() -> bool:
        return getattr(getcurrent(), greenlets.SQLALCHEMY_PROTOCOL, False) is True

    assert await greenlet_spawn(marked)
    assert await greenlets.call(marked)


async def test_await_works_inside_and_the_result_comes_back() -> None:
    assert await greenlets.call(in_greenlet)
    assert await greenlets.call(_awaits_twice, "ab") == "abab"
    with pytest.raises(MissingGreenlet):
        _awaits_twice("outside")


async def test_an_awaited_error_reaches_the_sync_code_then_the_caller() -> None:
    seen: list[str] = []

    def catches() -> str:
        try:
            await_(_fail())
        except LookupError as exc:
            seen.append(str(exc))
        return "recovered"

    def raises() -> None:
        await_(_fail())

    assert await greenlets.call(catches) == "recovered"
    assert seen == ["from the driver"]
    with pytest.raises(LookupError, match="from the driver"):
        await greenlets.call(raises)
    assert await greenlets.call(_awaits_twice, "x") == "xx"  # the worker is still fine


async def test_a_cancelled_caller_cancels_the_sync_code() -> None:
    reached: list[str] = []

    def sleeps() -> None:
        try:
            await_(asyncio.sleep(60))
        except asyncio.CancelledError:
            reached.append("cancelled inside")
            raise

    task = asyncio.create_task(greenlets.call(sleeps))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reached == ["cancelled inside"]
    assert await greenlets.call(_awaits_twice, "y") == "yy"


async def test_workers_are_reused_and_see_the_callers_context() -> None:
    def worker_and_var() -> tuple[int, str]:
        return id(getcurrent()), VAR.get()

    first, _ = await greenlets.call(worker_and_var)
    VAR.set("task one")
    again, value = await greenlets.call(worker_and_var)
    assert (again, value) == (first, "task one")

    async def other_task() -> str:
        VAR.set("task two")
        return (await greenlets.call(worker_and_var))[1]

    assert await asyncio.create_task(other_task()) == "task two"
    assert VAR.get() == "task one"


async def test_concurrent_calls_each_get_a_worker_of_their_own() -> None:
    results = await asyncio.gather(*(greenlets.call(_awaits_twice, str(n)) for n in range(50)))
    assert results == [str(n) * 2 for n in range(50)]


async def test_an_idle_worker_keeps_nothing_of_its_last_call() -> None:
    class Held:
        pass

    def returns(held: Held) -> Held:
        return held

    def raises(held: Held) -> None:
        raise ValueError(held)

    for fn in (returns, raises):
        held = Held()
        gone = weakref.ref(held)
        with contextlib.suppress(ValueError):
            await greenlets.call(fn, held)
        del held
        gc.collect()
        assert gone() is None, fn.__name__
