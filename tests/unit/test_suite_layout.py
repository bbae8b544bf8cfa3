"""The suite's split: the library's tests (tests/unit, tests/integration) and their models
(tests/library) import nothing of Harbor Commerce; its tests live in tests/harbor_commerce."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
LIBRARY_SIDE = sorted(
    path for folder in ("unit", "integration", "library") for path in (TESTS / folder).rglob("*.py")
)


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def test_the_scan_sees_the_files_and_their_imports() -> None:
    assert TESTS / "integration" / "test_repository.py" in LIBRARY_SIDE
    assert "tests.library.models" in imported_modules(TESTS / "unit" / "test_models.py")
    harbor_side = TESTS / "harbor_commerce" / "test_repositories.py"
    assert "harbor_commerce.repositories" in imported_modules(harbor_side)


def test_library_tests_import_nothing_of_harbor_commerce() -> None:
    offenders = {
        str(path.relative_to(TESTS)): shop
        for path in LIBRARY_SIDE
        if (
            shop := sorted(
                m for m in imported_modules(path) if m.split(".")[0] == "harbor_commerce"
            )
        )
    }
    assert offenders == {}, "move these to tests/harbor_commerce"
