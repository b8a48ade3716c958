"""Test support shipped beside the engine (importable by Ray workers;
the launchers of the services tests start, S3, PostgreSQL + MLflow and a fake
autoscaling cluster, live in tests/support/).

- `raysweep.testing.probe`: a probe trainer that records which rows each rank saw,
  its Parquet data and spec, and fault-suite hooks.
- `raysweep.testing.helpers`: free ports, listening sockets, waiting for a pid,
  MLflow run lookups, an uninterrupted probe run to compare against.
- `raysweep.testing.stores`: a store that writes nothing (`NullStore`).

The benchmarks and their runner are the repo's `benchmarks/` (not part of the engine).
"""
