"""The driver: the plan built from a spec, the Tune sweep (searchers, schedulers, trial functions) and the Train run."""
