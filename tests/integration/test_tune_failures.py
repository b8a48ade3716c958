"""A trial actor that dies is one failure for Tune, also when it dies while a new trial
reuses it (`_upstream.tune_failures`): the trial is retried as
failure.max_failures allows, not errored by one death counted twice."""

from __future__ import annotations

from ray import tune

from raysweep._ray_compat import set_ray_env_defaults
from raysweep._upstream.tune_failures import one_failure_per_actor_death


def test_an_actor_that_dies_while_being_reused_is_one_failure(ray_cluster, tmp_path):
    # (defined here: cloudpickle ships it by value to the trial's actor)
    class _DiesInReset(tune.Trainable):
        """One step per trial. The first time its actor is reused for a new trial it dies
        in `reset` (the process exits, as on a node that is lost): the actor's death
        reaches Tune while the new trial is still PENDING."""

        def setup(self, config: dict) -> None:
            self.steps = 0

        def step(self) -> dict:
            self.steps += 1
            return {"steps": self.steps, "done": True}

        def reset_config(self, new_config: dict) -> bool:
            import os
            from pathlib import Path

            marker = Path(new_config["marker"])
            if not marker.exists():
                marker.touch()
                os._exit(1)
            self.steps = 0
            return True

        def save_checkpoint(self, checkpoint_dir: str) -> dict:
            return {"steps": self.steps}

        def load_checkpoint(self, checkpoint: dict) -> None:
            self.steps = checkpoint["steps"]

    set_ray_env_defaults()
    one_failure_per_actor_death()
    marker = tmp_path / "died-in-reset"
    results = tune.Tuner(
        tune.with_resources(_DiesInReset, {"cpu": 1}),
        param_space={"marker": str(marker), "x": tune.grid_search([1, 2])},
        # As a sweep runs its one-worker trials: one at a time, the next on the last's actor.
        # (time_budget_s: a trial left without an actor fails the test instead of hanging it)
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True, time_budget_s=120),
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path / "storage"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    ).fit()
    assert marker.exists(), "no actor was reused (the fault did not happen)"
    finished = [r.error is None and r.metrics.get("steps") == 1 for r in results]
    assert finished == [True, True], [(r.error, r.metrics) for r in results]
    counted = sorted(t.run_metadata.num_failures for t in results._experiment_analysis.trials)
    assert counted == [0, 1], f"failures Tune counted per trial: {counted}"
