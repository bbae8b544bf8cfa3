"""The bench's memory goal: met, not met, or out of reach of any asyncpg read."""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks.goals import _memory_goal

FLOOR = 260.0  # KiB: a bare SELECT 1's peak (asyncio's receive buffer)


def _run(projection: float, repository: float, raw: float) -> dict[str, Any]:
    variants = [
        {"variant": "projection", "peak_memory_kib": projection},
        {"variant": "repository", "peak_memory_kib": repository},
        {"variant": "asyncpg-one", "peak_memory_kib": raw},
    ]
    return {
        "memory_floor_kib": FLOOR,
        "workloads": {"W2": {"cases": [{"params": {}, "variants": variants}]}},
    }


@pytest.mark.parametrize(
    ("projection", "repository", "status"),
    [
        (300.0, 1_000.0, "met"),  # 3.3x below
        (400.0, 1_000.0, "not met"),  # 2.5x, and 3x below would be above the floor
        (300.0, 700.0, "out of reach"),  # 3x below 700 KiB is below the floor
        # 3x below 800 KiB is above the floor (260) but below the leanest raw read (280)
        (300.0, 800.0, "out of reach"),
    ],
)
def test_memory_goal_verdicts(projection: float, repository: float, status: str) -> None:
    goal = _memory_goal(_run(projection, repository, 280.0), "projection", 3)
    assert goal is not None
    assert goal["status"] == status, goal["measured"]
    assert ("out of reach" in goal["measured"]) is (status == "out of reach")


def test_without_a_raw_read_the_floor_bounds_the_memory_goal() -> None:
    run = _run(300.0, 800.0, 280.0)
    variants = run["workloads"]["W2"]["cases"][0]["variants"]
    variants[:] = [v for v in variants if v["variant"] != "asyncpg-one"]
    goal = _memory_goal(run, "projection", 3)
    assert goal is not None
    assert goal["status"] == "not met", goal["measured"]  # 800 > 3 x 260


def test_memory_goal_names_the_leanest_raw_read() -> None:
    goal = _memory_goal(_run(300.0, 700.0, 280.0), "projection", 3)
    assert goal is not None
    assert "the leanest raw read (asyncpg-one) 20 KiB, 22.0x" in goal["measured"]
