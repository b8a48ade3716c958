"""Every environment variable raysweep sets is still read by the installed Ray, and the
private Ray APIs of raysweep._upstream still behave as its modules expect (no cluster
started; their pinned sources: test_upstream.py): a Ray upgrade that moves one fails here,
naming it, instead of inside a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray import tune

from raysweep import _ray_compat
from raysweep._upstream import Pin, cluster, tune_failures, tune_state


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


def test_tuner_keeps_its_run_config_where_replace_tuner_callbacks_looks():
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(callbacks=[]))
    marker = tune.Callback()
    tune_state.replace_tuner_callbacks(tuner, [marker])
    assert tuner._local_tuner._run_config.callbacks == [marker]


def test_tuner_keeps_its_searcher_where_replace_tuner_searcher_looks():
    from ray.tune.search import BasicVariantGenerator

    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator()))
    marker = BasicVariantGenerator()
    tune_state.replace_tuner_searcher(tuner, marker)
    assert tuner._local_tuner._tune_config.search_alg is marker


def test_tune_state_uploads_to_a_local_path_leave_each_file_whole(tmp_path, monkeypatch):
    """A driver killed during an upload of Tune's experiment folder leaves every stored
    file old or new, never truncated; a source file that vanishes is skipped; the next
    upload completes. (Ray's own copy truncated the files first: Tune then restarted
    the experiment on --resume.)"""
    import shutil

    import pyarrow.fs as pafs
    from ray.train._internal.storage import _FilesystemSyncer, _upload_to_fs_path

    from raysweep._upstream.tune_state import atomic_tune_state

    atomic_tune_state()
    atomic_tune_state()  # (idempotent)
    staging, storage = tmp_path / "staging", tmp_path / "storage"
    staging.mkdir()
    storage.mkdir()
    names = ["experiment_state-s.json", "search_gen_state-s.json", "searcher-state-s.pkl"]
    for name in names:
        (staging / name).write_text(f"new {name}")
        (storage / name).write_text(f"old {name}")
    upload, kwargs = _FilesystemSyncer(pafs.LocalFileSystem())._sync_up_command(str(staging), str(storage))
    copied: list[str] = []
    real = shutil.copyfile

    def dies_on_the_second_file(src: str, dst: str) -> str:
        if copied:  # the driver is killed while copying: what it wrote to is truncated
            open(dst, "w").close()
            raise KeyboardInterrupt
        copied.append(src)
        return real(src, dst)

    monkeypatch.setattr(shutil, "copyfile", dies_on_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        upload(**kwargs)
    monkeypatch.undo()
    stored = {p.name: p.read_text() for p in storage.iterdir() if not p.name.startswith(".")}
    assert sorted(stored) == sorted(names)
    assert all(text in (f"old {name}", f"new {name}") for name, text in stored.items()), stored
    assert sum(text.startswith("new") for text in stored.values()) == 1

    (staging / "tmp-searcher-state").write_text("renamed away")
    monkeypatch.setattr(shutil, "copyfile", lambda src, dst: real(src, dst) if "tmp-" not in src else
                        (_ for _ in ()).throw(FileNotFoundError(src)))
    upload(**kwargs)
    monkeypatch.undo()
    stored = {p.name: p.read_text() for p in storage.iterdir() if not p.name.startswith(".")}
    assert stored == {name: f"new {name}" for name in names}
    # Object stores (an object appears whole) and uploads with excludes keep Ray's path.
    assert _FilesystemSyncer(pafs._MockFileSystem())._sync_up_command(str(staging), "b/x")[0] is _upload_to_fs_path


def test_the_experiment_state_is_never_seen_half_written(tmp_path, monkeypatch):
    """Tune's upload thread may copy the staging folder while the next step saves it: the
    experiment state file must hold the previous whole state until the new one is whole.
    (raysweep's save_to_dir is Ray 2.60's with an atomic write: its body is checked here.)"""
    import inspect
    import json
    import types

    from ray.tune.execution.tune_controller import TuneController

    from raysweep._upstream.tune_state import atomic_tune_state

    atomic_tune_state()
    ours = TuneController.save_to_dir
    original = inspect.getsource(ours._raysweep_original)
    for line in ('"trial_data": list(self._get_trial_checkpoints().values())', '"runner_data": self.__getstate__()',
                 '"stats": {"start_time": self._start_time}', "json.dump(runner_state, f, cls=TuneFunctionEncoder)",
                 "self._search_alg.save_to_dir(driver_staging_path, session_str=self._session_str)",
                 "self._callbacks.save_to_dir(driver_staging_path, session_str=self._session_str)"):
        assert line in original, f"Ray's TuneController.save_to_dir changed: {line!r} is gone"

    saved: list[str] = []
    fake = types.SimpleNamespace(
        _get_trial_checkpoints=lambda: {"t1": "state of t1"}, __getstate__=lambda: {"runner": 1}, _start_time=5.0,
        _storage=types.SimpleNamespace(experiment_driver_staging_path=str(tmp_path)), _session_str="s",
        experiment_state_file_name="experiment_state-s.json",
        _search_alg=types.SimpleNamespace(save_to_dir=lambda d, session_str: saved.append("searcher")),
        _callbacks=types.SimpleNamespace(save_to_dir=lambda d, session_str: saved.append("callbacks")))
    final = tmp_path / "experiment_state-s.json"
    final.write_text(json.dumps({"previous": "state"}))
    seen_while_writing: list[str] = []
    real_dump = json.dump

    def dump(obj, f, **kwargs):  # what an upload copying the folder now would read
        seen_while_writing.append(final.read_text())
        return real_dump(obj, f, **kwargs)

    monkeypatch.setattr(json, "dump", dump)
    TuneController.save_to_dir(fake)
    assert seen_while_writing == [json.dumps({"previous": "state"})]
    assert json.loads(final.read_text())["trial_data"] == ["state of t1"]
    assert saved == ["searcher", "callbacks"] and sorted(p.name for p in tmp_path.iterdir()) == [final.name]


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
