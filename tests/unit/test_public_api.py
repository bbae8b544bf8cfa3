"""The library's public surface: pinned, and free of the worked example."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import harbordb

PUBLIC = {
    "NAMING_CONVENTION",
    "AfterCommitError",
    "CheckViolation",
    "CommitUncertain",
    "ConfigurationError",
    "Conflict",
    "InvalidReadToken",
    "Replicas",
    "Database",
    "DatabaseError",
    "ForeignKeyViolation",
    "HarborError",
    "IntegrityError",
    "InvalidCursor",
    "InvalidInput",
    "LazyLoadDetected",
    "NPlusOneWarning",
    "NotFound",
    "OffsetPage",
    "Page",
    "PoolerUnsafe",
    "PermissionDenied",
    "Projection",
    "QueryCounter",
    "Repository",
    "Retryable",
    "Settings",
    "Timeout",
    "Timestamps",
    "Unavailable",
    "UnitOfWork",
    "UnitOfWorkClosed",
    "any_of",
    "assert_max_queries",
    "contains",
    "count_queries",
    "escape_like",
    "normalize_url",
    "related",
    "require_raise_loading",
}


def test_all_is_pinned() -> None:
    """A name added to or dropped from the public API is a decision: update PUBLIC with it."""
    assert set(harbordb.__all__) == PUBLIC
    assert len(harbordb.__all__) == len(PUBLIC)  # no duplicates
    for name in harbordb.__all__:
        assert hasattr(harbordb, name), name


def library_modules() -> list[str]:
    found = sorted(
        info.name for info in pkgutil.walk_packages(harbordb.__path__, prefix="harbordb.")
    )
    return ["harbordb", *found]


def test_no_library_module_loads_the_worked_example() -> None:
    """Each harbordb module, imported alone in a fresh interpreter, loads no harbor_commerce
    module (and no benchmark code)."""
    modules = library_modules()
    assert "harbordb.uow" in modules
    assert "harbordb.testing.plugin" in modules
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('harbor_commerce', 'benchmarks', 'tortoise'))\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
