"""Stage 5, tracking: MLflow written from the driver, tags, trial state, the run record, lookups, reports."""
