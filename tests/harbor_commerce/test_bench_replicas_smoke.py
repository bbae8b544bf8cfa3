"""The replicas workload's smoke run: it starts an embedded server and a standby of its own.

Asserts what the results must show, never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_replicas_workload_runs_on_a_standby_of_its_own(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "replicas", "--no-plots",
         "--output", str(tmp_path)],
        cwd=REPO, env={**os.environ, "COLUMNS": "160"}, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "quick.json").read_text())
    cases = {case["label"]: case for case in result["workloads"]["replicas"]["cases"]}
    assert set(cases) == {"64 tasks", "1 task, caught up", "1 task, write then read"}
    variants = {label: {v["variant"] for v in case["variants"]} for label, case in cases.items()}
    assert variants["1 task, caught up"] == {"primary-alone", "primary+replica", "replica-token"}
    for case in cases.values():
        assert len({v["rows_per_op"] for v in case["variants"]}) == 1
        assert all(record["samples"] >= 1 for record in case["variants"])
