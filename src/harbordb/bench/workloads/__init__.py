"""The workloads, by key, in run order."""

from __future__ import annotations

from harbordb.bench.core import Workload
from harbordb.bench.workloads.customers import NPLUS1

WORKLOADS: dict[str, Workload] = {workload.key: workload for workload in (NPLUS1,)}
