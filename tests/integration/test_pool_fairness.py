"""Units of work get the pool's connections in the order they asked for them."""

from __future__ import annotations

import anyio
import anyio.lowlevel
from sqlalchemy import text

from harbordb import Database


async def test_waiting_units_of_work_are_served_first_come_first_served(
    migrated_url: str,
) -> None:
    async with Database(migrated_url, pool_size=2, max_overflow=0, pool_timeout=30) as db:
        served: list[int] = []

        async def caller(number: int) -> None:
            async with db.unit_of_work() as uow:
                served.append(number)
                await uow.session.execute(text("SELECT 1"))
                await anyio.sleep(0.002)  # hold it a moment: the others queue meanwhile
            # and ask again at once: a caller that just gave a connection back must not
            # get it ahead of those already waiting
            async with db.unit_of_work() as uow:
                served.append(100 + number)

        holders = [db.unit_of_work(), db.unit_of_work()]
        for holder in holders:  # both connections taken
            await holder.__aenter__()
        async with anyio.create_task_group() as tasks:
            for number in range(20):
                tasks.start_soon(caller, number)
                for _ in range(3):  # let it reach the queue before the next one starts
                    await anyio.lowlevel.checkpoint()
            await anyio.sleep(0.05)
            assert served == []  # all twenty are waiting
            for holder in holders:
                await holder.__aexit__(None, None, None)
    firsts = [number for number in served if number < 100]
    seconds = [number - 100 for number in served if number >= 100]
    assert firsts == list(range(20))
    # Every second request queued behind the first requests still waiting.
    assert all(served.index(100 + n) > served.index(min(n + 2, 19)) for n in range(18))
    assert sorted(seconds) == list(range(20))
