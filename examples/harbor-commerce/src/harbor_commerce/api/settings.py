"""The HTTP API's settings, read from the environment once at startup.

- ``HARBORDB_DATABASE_URL`` (else ``DATABASE_URL``) and ``HARBORDB_POOLER``:
  as for any harbordb `Database`.
- ``HARBOR_API_JWT_KEY``: the HS256 key that signs customers' tokens (at
  least 32 bytes). Required, unless the dev switch is on.
- ``HARBOR_API_DEV_AUTH=1``: DEVELOPMENT ONLY. Tokens are signed with
  `DEV_KEY`, a key printed in this source file, so anyone can mint a token
  for any customer. `make serve` turns it on; never set it in a deployment.
- ``HARBOR_API_STATEMENT_TIMEOUT``: seconds any one statement of a request
  may run (default 5).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from harbordb import ConfigurationError
from harbordb.config import Pooler, check_pooler

DEV_KEY = "harbor-commerce-development-key-never-use-in-production"
"""The well-known signing key of the dev switch: a token signed with it proves nothing."""

MIN_KEY_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """What `create_app` needs besides a `Database`."""

    database_url: str | None = None
    pooler: Pooler = "none"
    jwt_key: str | None = None
    dev_auth: bool = False
    statement_timeout: float = 5.0
    # Re-runs of a write that lost a race (serialization failure, deadlock).
    retries: int = 3
    # Seconds a client should wait before retrying a 503.
    retry_after: int = 1

    def __post_init__(self) -> None:
        check_pooler(self.pooler)
        if self.statement_timeout <= 0:
            raise ConfigurationError("statement_timeout must be a positive number of seconds")
        if self.retries < 0 or self.retry_after < 0:
            raise ConfigurationError("retries and retry_after must be >= 0")
        self.signing_key()  # refuse to start without a usable key

    def signing_key(self) -> str:
        """The HS256 key tokens must be signed with."""
        if self.jwt_key is not None:
            if len(self.jwt_key.encode()) < MIN_KEY_BYTES:
                raise ConfigurationError(f"the JWT key must be at least {MIN_KEY_BYTES} bytes long")
            return self.jwt_key
        if self.dev_auth:
            return DEV_KEY
        raise ConfigurationError(
            "no JWT key: set HARBOR_API_JWT_KEY (or HARBOR_API_DEV_AUTH=1, for development only)"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if environ is None else environ
        timeout = env.get("HARBOR_API_STATEMENT_TIMEOUT")
        try:
            statement_timeout = float(timeout) if timeout else 5.0
        except ValueError:
            raise ConfigurationError("HARBOR_API_STATEMENT_TIMEOUT must be seconds") from None
        return cls(
            database_url=env.get("HARBORDB_DATABASE_URL") or env.get("DATABASE_URL"),
            pooler=check_pooler(env.get("HARBORDB_POOLER") or "none"),
            jwt_key=env.get("HARBOR_API_JWT_KEY") or None,
            dev_auth=env.get("HARBOR_API_DEV_AUTH", "").lower() in _TRUE,
            statement_timeout=statement_timeout,
        )
