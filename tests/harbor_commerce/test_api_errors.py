"""The API's central error mapping: each harbordb error to its status and body.

Where the database can produce the error on demand it does (a statement
timeout, a privilege the role lacks, a server that is not there); the rest
are raised by test-only routes added to a real app. Bodies never carry SQL,
bound values or messages of unexpected exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import text

from harbor_commerce.api import ApiSettings, create_app
from harbor_commerce.api.deps import ReadWork
from harbor_commerce.inventory import CheckoutFailed, ReservationExpired
from harbor_commerce.models import ReservationStatus
from harbor_commerce.uow import CommerceWork, commerce_database
from harbordb import (
    CommitUncertain,
    Conflict,
    Database,
    ForeignKeyViolation,
    InvalidInput,
    Retryable,
    Unavailable,
)
from harbordb.testing.cluster import _free_port

KEY = "a-test-signing-key-that-is-long-enough-for-hs256"
SECRET = "s3cret-bound-value"
DIRECT_AND_POOLED = ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)]

probes = APIRouter(prefix="/probe")


@probes.get("/sleep")
async def sleep(uow: ReadWork) -> dict[str, int]:
    """Outlasts the app's statement timeout (0.05 s)."""
    await uow.session.execute(text("SELECT pg_sleep(:s), :secret"), {"s": 2, "secret": SECRET})
    return {}


@probes.get("/orders-as-anon")
async def orders_as_anon(uow: ReadWork) -> dict[str, int]:
    """harbordb_anon holds no privilege on orders."""
    await uow.session.execute(
        text("SELECT count(*) FROM orders WHERE order_ref = :r"), {"r": SECRET}
    )
    return {}


RAISED = {
    "conflict": Conflict(
        f"unique constraint violated (SQLSTATE 23505, constraint uq_x) {SECRET}", sqlstate="23505"
    ),
    "foreign-key": ForeignKeyViolation("fk (SQLSTATE 23503)", sqlstate="23503"),
    "retryable": Retryable("transaction conflict (SQLSTATE 40001)", sqlstate="40001"),
    "unavailable": Unavailable("database connection unavailable"),
    "expired": ReservationExpired("ref", {7: ReservationStatus.EXPIRED}),
    "checkout-failed": CheckoutFailed(
        "this order_ref was checked out by another customer", order_ref="ref"
    ),
    "bug": RuntimeError(f"unexpected {SECRET}"),
    "invalid-input": InvalidInput(f"qty must be between 1 and 5, got {SECRET}"),
    "uncertain": CommitUncertain("COMMIT was sent, then the connection was lost"),
}


@probes.get("/raise/{name}")
async def raise_(name: str) -> None:
    raise RAISED[name]


@pytest.fixture(params=DIRECT_AND_POOLED)
def api_db(request: pytest.FixtureRequest) -> Database[CommerceWork]:
    name = "database" if request.param == "direct" else "pooled_database"
    db: Database[CommerceWork] = request.getfixturevalue(name)
    return db


def _client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://harbor.test")


@pytest.fixture
async def client(api_db: Database[CommerceWork]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ApiSettings(jwt_key=KEY, statement_timeout=0.05), database=api_db)
    app.include_router(probes)
    async with _client(app) as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    for leak in (SECRET, "SELECT", "SQLSTATE", "constraint"):
        assert leak not in response.text


async def test_statement_timeout_is_504(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/probe/sleep"), 504, "timeout")


async def test_missing_privilege_is_403(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/probe/orders-as-anon"), 403, "forbidden")


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("conflict", 409, "conflict"),
        ("foreign-key", 409, "conflict"),
        ("retryable", 503, "busy"),
        ("unavailable", 503, "unavailable"),
        ("expired", 409, "reservation_expired"),
        ("checkout-failed", 409, "checkout_failed"),
        ("bug", 500, "internal"),
        ("invalid-input", 422, "invalid_request"),
        ("uncertain", 503, "commit_uncertain"),
    ],
)
async def test_raised_errors_map_to_their_status(
    client: httpx.AsyncClient, name: str, status: int, code: str
) -> None:
    response = await client.get(f"/probe/raise/{name}")
    assert_error(response, status, code)
    if status == 503:
        assert response.headers["Retry-After"] == "1"
    else:
        assert "Retry-After" not in response.headers


async def test_unreachable_database_is_503_with_retry_after() -> None:
    url = f"postgresql://harbor:{SECRET}@127.0.0.1:{_free_port()}/harbor"
    async with (
        commerce_database(url, pool_timeout=2) as db,
        _client(create_app(ApiSettings(jwt_key=KEY), database=db)) as client,
    ):
        response = await client.get("/catalog")
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"


def test_the_app_refuses_to_start_without_a_usable_key() -> None:
    from harbordb import ConfigurationError

    with pytest.raises(ConfigurationError, match="HARBOR_API_JWT_KEY"):
        ApiSettings()
    with pytest.raises(ConfigurationError, match="32 bytes"):
        ApiSettings(jwt_key="short")
    assert ApiSettings(dev_auth=True).signing_key() != ""
    env = {"HARBOR_API_JWT_KEY": KEY, "HARBOR_API_STATEMENT_TIMEOUT": "2.5"}
    assert ApiSettings.from_env(env) == ApiSettings(jwt_key=KEY, statement_timeout=2.5)
