"""README's "Use harbordb in your service" is tests/service, block by block.

A block after ``<!-- file: PATH -->`` is that whole file (its first line may
name it in a comment); one after ``<!-- excerpt: PATH -->`` is a part of it
(parts separated by a line ``...`` appear in that order). tests/service itself
runs through the plugin and mypy --strict (test_service_example.py), so every
line of the section's code runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- (file|excerpt): (\S+) -->\n```\w*\n(.*?)```", re.S)


def service_section() -> str:
    text = README.read_text()
    start = text.index("\n## Use harbordb in your service\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks() -> list[tuple[str, str, str]]:
    return BLOCK.findall(service_section())


def test_the_section_shows_every_part_of_the_service() -> None:
    shown = {(kind, path) for kind, path, _ in blocks()}
    for name in ("models", "repositories", "work", "publishing"):
        assert ("file", f"tests/service/blogsvc/{name}.py") in shown
    for path in ("migrations/env.py", "alembic.ini", "conftest.py"):
        assert ("file", f"tests/service/{path}") in shown
    for path in ("pyproject.toml", "migrations/versions/blog_0001_schema.py", "tests/test_blog.py"):
        assert ("excerpt", f"tests/service/{path}") in shown


@pytest.mark.parametrize(("kind", "path", "code"), blocks(), ids=lambda v: str(v)[:40])
def test_each_block_is_the_service_code(kind: str, path: str, code: str) -> None:
    source = (ROOT / path).read_text()
    if kind == "file":
        label = f"# {Path(path).relative_to('tests/service')}\n"
        assert code.removeprefix(label) == source
        return
    position = 0
    for part in code.split("\n...\n"):
        found = source.find(part.strip("\n"), position)
        assert found >= 0, f"not in {path} (in this order):\n{part}"
        position = found + len(part.strip("\n"))
