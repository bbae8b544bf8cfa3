"""Cancel a request's work when its client goes away.

Starlette runs a handler to the end even after the client disconnected, so a
slow read would hold its unit of work, its connection and a server backend
for nobody. `CancelOnDisconnect` (pure ASGI, for asyncio servers such as
uvicorn) reads the request body first (the API's bodies are small JSON),
then runs the app in a task of its own while it listens for
``http.disconnect``; on one it cancels that task.

A plain ``Task.cancel()`` rather than an anyio cancel scope: a cancelled
asyncpg query then sends PostgreSQL its cancel request, so the statement
stops on the server too (a cancel scope would cancel that request as well,
and the server would notice only a vanished client, and only with
``client_connection_check_interval`` set). The unit of work's exit rolls back
under a shield and discards the connection; a write cancelled while its
COMMIT was in flight is `CommitUncertain` for nobody, and the client's retry
with the same order_ref finds out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import suppress
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone before the request was complete: nothing to do
            body.append(message)
            if not message.get("more_body", False):
                break
        gone = asyncio.Event()

        async def replay() -> Message:
            if body:
                return body.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        work = asyncio.ensure_future(self.app(scope, replay, send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the client went away first
                work.cancel()
                with suppress(asyncio.CancelledError):
                    await work
                return
            work.result()  # the app's own exception, if any
        finally:
            watcher.cancel()
            if not work.done():  # this request itself was cancelled (shutdown)
                work.cancel()
