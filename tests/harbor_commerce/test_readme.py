"""The README's tour runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def tour_source() -> str:
    text = README.read_text()
    match = re.search(r"<!-- tour:.*?-->\n```python\n(.*?)```", text, re.S)
    assert match, "README has no tour block"
    return match.group(1)


def test_the_readme_tour_runs(migrated_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8].upper()  # the tour commits: keep its names unique per run
    source = tour_source().replace("TOUR-KETTLE-1L", f"TOUR-KETTLE-{tag}")
    source = source.replace("tour-order-", f"tour-{tag}-")
    script = tmp_path / "tour.py"
    script.write_text(source)
    env = {**os.environ, "HARBORDB_DATABASE_URL": migrated_url}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"('TOUR-KETTLE-{tag}', 3)" in done.stdout
    assert "only 1 left" in done.stdout
