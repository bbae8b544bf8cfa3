"""The application factory.

    uvicorn --factory harbor_commerce.api:create_app     # settings from the environment

`create_app` reads `ApiSettings` (or takes them), and opens Harbor's
`Database` in the app's lifespan, closing it at shutdown; there, too, it
switches on harbordb's observability when the environment asks for it. A `Database` passed
in (tests) is used as it is and left open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from harbor_commerce.api.disconnect import CancelOnDisconnect
from harbor_commerce.api.errors import install_error_handlers
from harbor_commerce.api.routes import router
from harbor_commerce.api.settings import ApiSettings
from harbor_commerce.uow import CommerceWork, commerce_database
from harbordb import Database
from harbordb.observability import instrument_from_env


def create_app(
    settings: ApiSettings | None = None, *, database: Database[CommerceWork] | None = None
) -> FastAPI:
    """The Harbor Commerce API on `database`, or on one built from `settings`."""
    settings = settings or ApiSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if database is not None:
            yield
            return
        async with commerce_database(settings.database_url, pooler=settings.pooler) as db:
            # Traces, pool metrics, slow statements: off unless HARBORDB_OTEL=1 or
            # HARBORDB_SLOW_STATEMENT_MS is set (harbordb.observability).
            observed = instrument_from_env(db)
            app.state.database = db
            try:
                yield
            finally:
                if observed is not None:
                    observed.remove()

    app = FastAPI(
        title="Harbor Commerce",
        summary="harbordb's worked example as an HTTP service",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if database is not None:
        app.state.database = database
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(CancelOnDisconnect)
    return app
