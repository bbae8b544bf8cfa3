"""harbordb's benchmark suite: `make bench`, or `python -m benchmarks` from the checkout.

Loading strategies against the raw-asyncpg floor and a peer ORM, scaling
curves, bulk writes and pool modes, on deterministic Harbor Commerce data.
See benchmarks/README.md for the workloads and the latest figures. Its
requirements are in benchmarks/requirements.txt; it is not part of the
harbordb package.
"""
