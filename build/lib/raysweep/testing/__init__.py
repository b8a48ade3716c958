"""Test and benchmark support shipped beside the engine (importable by Ray workers).

- `raysweep.testing.probe`: a probe trainer that records which rows each rank saw,
  its Parquet data and spec, and fault-suite hooks.
- `raysweep.testing.helpers`: free ports, listening sockets, waiting for a pid,
  MLflow run lookups, an uninterrupted probe run to compare against.
- `raysweep.testing.stores`: a store that writes nothing (`NullStore`).
- `raysweep.testing.seaweed`: a real S3 server (SeaweedFS) on loopback.
- `raysweep.testing.bench`: the benchmark registry.
"""
