"""The workloads, by key, in run order."""

from __future__ import annotations

from benchmarks.core import Workload
from benchmarks.workloads.bulk import W5
from benchmarks.workloads.catalog import W1, W2
from benchmarks.workloads.customers import NPLUS1, W4
from benchmarks.workloads.graph import W3
from benchmarks.workloads.pools import W6
from benchmarks.workloads.replicas import REPLICAS
from benchmarks.workloads.unitofwork import UOW

WORKLOADS: dict[str, Workload] = {
    workload.key: workload for workload in (NPLUS1, UOW, W1, W2, W3, W4, W5, W6, REPLICAS)
}
