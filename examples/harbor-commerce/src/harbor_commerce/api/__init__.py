"""Harbor Commerce's HTTP API: FastAPI on harbordb, one unit of work per request.

    uvicorn --factory harbor_commerce.api:create_app

See `app` (the factory), `deps` (units of work, the caller), `errors` (the
status mapping), `routes`, `schemas`, `auth` and `settings`.
"""

from harbor_commerce.api.app import create_app
from harbor_commerce.api.auth import Caller, Unauthenticated
from harbor_commerce.api.settings import DEV_KEY, ApiSettings

__all__ = ["DEV_KEY", "ApiSettings", "Caller", "Unauthenticated", "create_app"]
