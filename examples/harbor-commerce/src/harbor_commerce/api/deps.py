"""Request dependencies: the database, the caller, and one unit of work per request.

Read endpoints take `ReadWork`: a read-only `CommerceWork` in the caller's
role, opened before the handler runs and closed (rolled back) when it
returns, before the response is sent, so the connection is back in the pool
while the body travels. Write endpoints take `Writes` and hand it a
function: it runs through `Database.run`, in a unit of work that is
committed when the function returns and re-run whole on a `Retryable` error.
Handlers build their response models inside the unit of work, from eagerly
loaded objects or read models, so serialisation can never touch the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from harbor_commerce.api.auth import ANONYMOUS, Caller, Unauthenticated, verify
from harbor_commerce.api.settings import ApiSettings
from harbor_commerce.uow import CommerceWork
from harbordb import Database

T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False, description="A customer's HS256 JWT (`sub`: customer id)")


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database[CommerceWork]:
    database: Database[CommerceWork] = request.app.state.database
    return database


Settings = Annotated[ApiSettings, Depends(get_settings)]
CommerceDatabase = Annotated[Database[CommerceWork], Depends(get_database)]


def current_caller(
    settings: Settings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The verified caller; anonymous without an ``Authorization: Bearer`` header."""
    if credentials is None:
        return ANONYMOUS
    return verify(credentials.credentials, settings.signing_key())


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def signed_in_customer(caller: CurrentCaller) -> int:
    """The signed-in customer's id; `Unauthenticated` (401) for anonymous callers."""
    if caller.customer_id is None:
        raise Unauthenticated("sign in: this endpoint needs a bearer token")
    return caller.customer_id


CustomerId = Annotated[int, Depends(signed_in_customer)]


async def read_work(
    db: CommerceDatabase, caller: CurrentCaller, settings: Settings
) -> AsyncIterator[CommerceWork]:
    """The request's read-only unit of work, in the caller's role with its claims."""
    async with db.unit_of_work(
        read_only=True,
        role=caller.role,
        claims=caller.claims,
        statement_timeout=settings.statement_timeout,
    ) as uow:
        yield uow


# scope="function": the unit of work ends when the handler returns, not after the
# response has been sent.
ReadWork = Annotated[CommerceWork, Depends(read_work, scope="function")]


@dataclass(frozen=True, slots=True)
class WriteRunner:
    """Runs a request's write in its own unit of work through `Database.run`."""

    db: Database[CommerceWork]
    caller: Caller
    settings: ApiSettings

    async def __call__(
        self, fn: Callable[[CommerceWork], Awaitable[T]], *, as_caller: bool = True
    ) -> T:
        """``await fn(uow)``, committed on return, re-run on `Retryable`.

        `as_caller`: under the caller's role and claims (row-level security
        applies). False runs as the service's own database user, for writes
        the customer roles may not make (stock levels); the handler then
        checks ownership itself, with the verified customer id.
        """
        options: dict[str, Any] = {}
        if as_caller:
            options = {"role": self.caller.role, "claims": self.caller.claims}
        return await self.db.run(
            fn,
            retries=self.settings.retries,
            statement_timeout=self.settings.statement_timeout,
            **options,
        )


def writes(db: CommerceDatabase, caller: CurrentCaller, settings: Settings) -> WriteRunner:
    return WriteRunner(db, caller, settings)


Writes = Annotated[WriteRunner, Depends(writes)]
