"""Stage 4, execution: the run plan, trainer context, workers, Lightning, checkpoints, and the sweep on Tune."""
