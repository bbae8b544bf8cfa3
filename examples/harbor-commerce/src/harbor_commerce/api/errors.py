"""Every error the API returns, mapped once, here.

| raised                                            | status | code                |
|---------------------------------------------------|--------|---------------------|
| `Unauthenticated`                                 | 401    | unauthenticated     |
| `NotFound`                                        | 404    | not_found           |
| `InsufficientStock`                               | 409    | insufficient_stock  |
| `ReservationExpired`                              | 409    | reservation_expired |
| `CheckoutFailed`                                  | 409    | checkout_failed     |
| `InvalidInput` (refused before any SQL)           | 422    | invalid_request     |
| `CommitUncertain` (COMMIT sent, then lost)        | 503    | commit_uncertain + Retry-After |
| `Conflict`, other `IntegrityError`s               | 409    | conflict            |
| `InvalidCursor`                                   | 400    | invalid_cursor      |
| request validation                                | 422    | invalid_request     |
| `PermissionDenied`                                | 403    | forbidden           |
| `Retryable` (retries exhausted)                   | 503    | busy + Retry-After  |
| `Unavailable`                                     | 503    | unavailable + Retry-After |
| `Timeout`                                         | 504    | timeout             |
| anything else                                     | 500    | internal            |

Bodies are ``{"error": {"code": ..., "message": ...}}``. Database errors get
a fixed message per code (their text names constraints and tables); domain
refusals keep theirs, which harbordb and the inventory write without bound
values. Validation errors list where and why, without echoing the input.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from harbor_commerce.api.auth import Unauthenticated
from harbor_commerce.api.settings import ApiSettings
from harbor_commerce.inventory import CheckoutFailed, InsufficientStock, ReservationExpired
from harbordb import (
    CommitUncertain,
    DatabaseError,
    HarborError,
    IntegrityError,
    InvalidCursor,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Retryable,
    Timeout,
    Unavailable,
)

logger = logging.getLogger("harbor_commerce.api")

# (exception class, status, code, fixed message or None to keep the error's own).
# The first matching row wins: subclasses before their bases.
_MAPPING: tuple[tuple[type[HarborError], int, str, str | None], ...] = (
    (Unauthenticated, 401, "unauthenticated", None),
    (NotFound, 404, "not_found", None),
    (InsufficientStock, 409, "insufficient_stock", None),
    (ReservationExpired, 409, "reservation_expired", None),
    (CheckoutFailed, 409, "checkout_failed", None),
    (InvalidInput, 422, "invalid_request", "an argument is out of range or cannot be stored"),
    (
        CommitUncertain,
        503,
        "commit_uncertain",
        "the change may or may not have been applied: repeat the same request (the same "
        "order_ref) to find out",
    ),
    (IntegrityError, 409, "conflict", "the request conflicts with the current data"),
    (InvalidCursor, 400, "invalid_cursor", "the cursor is not valid here: start from the top"),
    (PermissionDenied, 403, "forbidden", "not allowed for this caller"),
    (Retryable, 503, "busy", "the database was too busy to complete this: retry"),
    (Unavailable, 503, "unavailable", "the database is unavailable: retry later"),
    (Timeout, 504, "timeout", "the database did not answer in time"),
)
_RETRY_LATER = {503}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _for_harbor_error(exc: HarborError, settings: ApiSettings) -> JSONResponse:
    for cls, status, code, fixed in _MAPPING:
        if isinstance(exc, cls):
            headers = {"Retry-After": str(settings.retry_after)} if status in _RETRY_LATER else None
            if status >= 500 or isinstance(exc, DatabaseError | CommitUncertain):
                logger.warning("%s: %s", code, exc)  # harbordb messages carry no bound values
            return error_response(status, code, fixed or str(exc), headers)
    return _internal(exc)


def _internal(exc: BaseException) -> JSONResponse:
    logger.error("unhandled %s", type(exc).__name__, exc_info=exc)
    return error_response(500, "internal", "internal error")


def _validation_details(exc: RequestValidationError) -> str:
    """``body.qty: Input should be greater than 0; ...``: where and why, not the input."""
    parts: list[str] = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is invalid"


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping above on `app`."""

    async def on_harbor_error(request: Request, exc: Exception) -> JSONResponse:
        settings: ApiSettings = request.app.state.settings
        assert isinstance(exc, HarborError)
        return _for_harbor_error(exc, settings)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", _validation_details(exc))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal(exc)

    handlers: dict[Any, Any] = {
        HarborError: on_harbor_error,
        RequestValidationError: on_validation_error,
        Exception: on_unexpected,
    }
    for cls, handler in handlers.items():
        app.add_exception_handler(cls, handler)
