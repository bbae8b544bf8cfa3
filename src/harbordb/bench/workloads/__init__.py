"""The workloads, by key, in run order."""

from __future__ import annotations

from harbordb.bench.core import Workload
from harbordb.bench.workloads.bulk import W5
from harbordb.bench.workloads.catalog import W1, W2
from harbordb.bench.workloads.customers import NPLUS1, W4
from harbordb.bench.workloads.graph import W3
from harbordb.bench.workloads.pools import W6

WORKLOADS: dict[str, Workload] = {
    workload.key: workload for workload in (NPLUS1, W1, W2, W3, W4, W5, W6)
}
