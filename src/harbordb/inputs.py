"""Checks of values bound into SQL, made before any statement is sent.

PostgreSQL refuses these too, but only after a round trip and as a generic
`DatabaseError`; some (a NUL, a lone surrogate) the driver refuses with a
message quoting the value. Checked here, they are an `InvalidInput` naming
the argument, never its value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harbordb.errors import InvalidInput

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1


def check_bigint(name: str, value: object, *, minimum: int = BIGINT_MIN) -> int:
    """An int that fits PostgreSQL's BIGINT (and is >= `minimum`); bools are refused."""
    if minimum == 1:
        wanted = f"{name} must be a positive whole number of at most {BIGINT_MAX}"
    else:
        wanted = f"{name} must be a whole number between {minimum} and {BIGINT_MAX}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{wanted}, got {type(value).__name__}")
    if not minimum <= value <= BIGINT_MAX:
        raise InvalidInput(f"{wanted} (BIGINT)")
    return value


def check_text(name: str, value: object) -> str:
    """A str PostgreSQL can store: no NUL character, no lone surrogate."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL character, which PostgreSQL cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} contains a lone surrogate, which is not valid UTF-8") from None
    return value


def check_json(name: str, value: Any) -> None:
    """Every string (keys too) storable, every number finite and in range for jsonb."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            check_text(name, item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{name} holds a non-finite number (NaN or infinity)")
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
