"""Every environment variable raysweep sets is still read by the installed Ray, and the
private Ray APIs of raysweep._upstream still behave as its modules expect (no cluster
started; their pinned sources: test_upstream.py): a Ray upgrade that moves one fails here,
naming it, instead of inside a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from raysweep import _ray_compat
from raysweep._upstream import Pin, cluster, tune_failures


def test_checked_against_the_installed_ray_version():
    assert ray.__version__ == _ray_compat.RAY_VERSION_CHECKED


@pytest.mark.parametrize("name", sorted(_ray_compat.RAY_ENV_DEFAULTS))
def test_ray_still_reads_each_environment_variable_raysweep_sets(name):
    source = Path(ray.__file__).parent
    readers = [p for p in source.rglob("*.py")
               if "rllib" not in p.parts and f'"{name}"' in p.read_text(errors="ignore")]
    assert readers, f"no module of Ray {ray.__version__} reads {name} any more"


def test_token_generator_and_token_config():
    from ray._raylet import Config  # type: ignore[attr-defined]

    token = cluster.generate_token()
    assert isinstance(token, str) and len(token) >= 32 and token != cluster.generate_token()
    assert callable(Config.initialize)


def test_token_probe_uses_a_gcs_client_that_raises_authentication_error():
    """gcs_refuses_token: Ray's Cython GCS client and the error a refused token raises
    (the refusal itself: tests/cluster/test_cluster.py::test_wrong_token_says_how_to_get_the_right_one)."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]
    from ray.exceptions import AuthenticationError, RayError

    assert isinstance(GcsClient, type) and issubclass(AuthenticationError, RayError)


def test_cluster_address_writer_exists():
    from ray._private.utils import write_ray_address

    assert callable(write_ray_address)


def test_upload_walk_honours_gitignore(tmp_path):
    (tmp_path / ".gitignore").write_text("secret.txt\n")
    (tmp_path / "secret.txt").write_text("x")
    (tmp_path / "spec.yaml").write_text("name: x\n")
    seen: list[str] = []
    cluster.walk_upload(tmp_path, lambda p: seen.append(p.name) if p.is_file() else None)
    assert "spec.yaml" in seen and "secret.txt" not in seen


def test_launcher_config_validation_rejects_a_broken_config():
    with pytest.raises(Exception, match="provider|cluster_name|required"):
        cluster.validate_launcher_config({"cluster_name": "x"})


def test_local_provider_state_is_in_rays_temp_dir(tmp_path, monkeypatch):
    from raysweep._upstream.cluster import local_provider_state

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert local_provider_state("mine") == tmp_path / "ray" / "cluster-mine.state"


def test_draining_nodes_reads_the_gcs_accessor_train_v2s_watcher_reads():
    """draining_nodes: the GlobalState method Train V2's PreemptionWatcher calls (the
    call itself, against a drained node: tests/faults/test_cluster_preemption.py)."""
    import inspect

    import ray._private.state
    from ray.train.v2._internal.execution import preemption

    assert "get_draining_nodes" in inspect.getsource(preemption._get_draining_nodes)
    assert list(inspect.signature(ray._private.state.state.get_draining_nodes).parameters) == []


def test_tune_still_processes_one_actor_death_in_two_callbacks():
    """one_failure_per_actor_death patches TuneController for the path in Ray 2.60 where
    one RayActorError reaches both the actor's and the task's error callback (its effect
    on a real Tune run: tests/integration/test_tune_failures.py)."""
    import inspect

    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.tune.execution.tune_controller import TuneController

    both = inspect.getsource(RayActorManager._actor_task_failed)
    assert both.index("tracked_actor._on_error(tracked_actor, exception)") < \
        both.index("tracked_actor_task._on_error(tracked_actor, exception)"), "Ray's ActorManager changed"
    upstream = Pin("ray.tune.execution.tune_controller:TuneController._actor_failed", "").resolve()  # (unpatched)
    assert "self._trial_task_failure(trial, exception=exception)" in inspect.getsource(upstream)
    assert "self._resetting_trials.add(trial)" in inspect.getsource(TuneController._schedule_trial_reset)

    tune_failures.one_failure_per_actor_death()
    tune_failures.one_failure_per_actor_death()  # (idempotent)
    assert TuneController._trial_task_failure._raysweep_once
