"""Tune's stored experiment state holds a trial before the trial trains
(`_upstream.tune_state.persist_trials_before_they_start`): a sweep driver killed at any moment
after a trial started leaves that trial for `--resume` to continue, not to replace."""

from __future__ import annotations

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from raysweep._ray_compat import set_ray_env_defaults
from raysweep._upstream.tune_state import persist_trials_before_they_start
from raysweep.testing.stores import slow_upload_filesystem


def test_a_started_trial_is_in_the_stored_state_though_uploads_lag(ray_cluster, tmp_path):
    # (defined here: cloudpickle ships it by value to the trial)
    def _sees_itself_in_storage(config: dict) -> None:
        """The trial reads the experiment state on storage and reports whether its own id is
        in it (the storage is a local folder behind the slow filesystem)."""
        from pathlib import Path

        trial_id = tune.get_context().get_trial_id()
        states = Path(config["experiment_dir"]).glob("experiment_state-*.json")
        tune.report({"seen": float(any(trial_id in p.read_text() for p in states))})

    set_ray_env_defaults()  # (Tune snapshots its state at every step: TUNE_GLOBAL_CHECKPOINT_S=0)
    persist_trials_before_they_start()
    storage = tmp_path / "storage"
    storage.mkdir()
    results = tune.Tuner(
        _sees_itself_in_storage,
        param_space={"experiment_dir": str(storage / "exp")},
        # As a sweep runs: a searcher that makes each trial when a slot frees, one
        # trial at a time, the next trial on the actor of the last.
        tune_config=tune.TuneConfig(search_alg=OptunaSearch({"x": optuna.distributions.FloatDistribution(0, 1)},
                                                            metric="seen", mode="max"),
                                    num_samples=3, max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(name="exp", storage_path=str(storage), verbose=0,
                                  storage_filesystem=slow_upload_filesystem(0.3)),
    ).fit()
    seen = [r.metrics.get("seen") for r in results]
    assert seen == [1.0, 1.0, 1.0], f"trials that did not find themselves in the stored state: {seen}"
