"""Who is calling: a verified HS256 JWT, or nobody.

A valid token's ``sub`` (a customer id) becomes the unit of work's claims
and its role ``authenticated``: the row-level security policies of migration
0002 then show that customer's rows only. No token: role ``anon``, which
reads the catalog and nothing else. A token that is present but invalid
(bad signature, expired, no ``sub``) is refused, never downgraded to anon.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from harbordb import HarborError

ALGORITHM = "HS256"
_CUSTOMER_ID = re.compile(r"[1-9][0-9]{0,17}")  # what the policies accept as a customer id


class Unauthenticated(HarborError):
    """The request carries no valid token where one is required (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified caller: a customer (role ``authenticated``) or anonymous (``anon``)."""

    customer_id: int | None = None

    @property
    def role(self) -> str:
        return "anon" if self.customer_id is None else "authenticated"

    @property
    def claims(self) -> Mapping[str, Any] | None:
        """What row-level security reads: the subject only, never the rest of the token."""
        return None if self.customer_id is None else {"sub": str(self.customer_id)}


ANONYMOUS = Caller()


def verify(token: str, key: str) -> Caller:
    """The caller a bearer token names; `Unauthenticated` unless it verifies.

    Only HS256 is accepted (no ``alg: none``, no key confusion); ``exp`` and
    ``sub`` are required. The reason for a refusal is not told to the client.
    """
    try:
        payload = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.InvalidTokenError:
        raise Unauthenticated("the bearer token is invalid or expired") from None
    subject = payload.get("sub")
    if not isinstance(subject, str) or not _CUSTOMER_ID.fullmatch(subject):
        raise Unauthenticated("the bearer token names no customer")
    return Caller(int(subject))


def issue(customer_id: int, key: str, *, ttl: float = 3600.0) -> str:
    """A token for `customer_id`, valid for `ttl` seconds (tests and the dev server)."""
    now = int(time.time())
    claims = {"sub": str(customer_id), "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, key, algorithm=ALGORITHM)
