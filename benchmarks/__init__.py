"""The benchmarks of `scripts/bench.py` (and the runner `scripts/gpu_check.py` shares).

Not part of the installed package: the repo's own folder, beside `raysweep/`.

- `benchmarks.core`: the registry and the runner (each entry in a process of its own
  under a wall-clock limit, stages, interleaved pairs, Markdown); standard library only.
- `benchmarks.child`: the entry's process.
- `benchmarks.entries`: the entries' registry and their modules, one per entry
  (`overhead`, `step`, `dp`, `ingest`, `stream` (stream, stream_s3), `stream_ranks`,
  `stream_memory`, `fingerprint`, `search`, `search_mo`, `throughput`, `tracking`) and
  two per group (`columns`: columns_memory, columns_transform, columns_padding;
  `fsdp`: fsdp_step, fsdp_checkpoint, compile_tokens).
- `benchmarks.common`: the context and helpers the entries share.
- `benchmarks.data_support`: the data entries' files, S3 environment and streaming
  child processes (`python -m benchmarks.data_support`).
"""
