"""Stage 3, data: Parquet files and their schema (driver), shard math (pure), the in-memory loader."""
