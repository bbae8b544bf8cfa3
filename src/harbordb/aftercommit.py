"""Running a unit of work's after-commit callbacks, once its transaction committed."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from harbordb.errors import AfterCommitError

AfterCommitCallback = Callable[[], object]


async def run_callbacks(callbacks: list[AfterCommitCallback]) -> None:
    """Run every callback in order (awaiting what an async one returns), then raise
    `AfterCommitError` if any raised: one failing callback does not skip the rest."""
    errors: list[Exception] = []
    for callback in callbacks:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise AfterCommitError(
            f"the transaction committed, but {len(errors)} of {len(callbacks)} "
            f"after-commit callback(s) raised (first: {type(errors[0]).__name__})",
            errors,
        ) from errors[0]
