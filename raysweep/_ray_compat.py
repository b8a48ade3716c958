"""Every touch of Ray's private API, and every environment variable raysweep sets
(Ray's, and the few of MLflow, cuBLAS and raysweep itself).

Each was checked against Ray 2.60.0 (`ray/...` paths are in its wheel). When Ray
moves one, this is the only module to change; `tests/unit/test_ray_compat.py`
imports each so a Ray upgrade fails loudly there first. Each private import sits
inside the function that needs it, so one that moved fails only that feature.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

RAY_VERSION_CHECKED = "2.60.0"

# Train V2's controller collects reports (and so registers checkpoints) by polling
# its workers, every 2 s by default: a worker that dies in between loses the
# checkpoint it had just reported. Poll every 0.5 s (the controller inherits it).
HEALTH_CHECK_INTERVAL_S = 0.5

RAY_ENV_DEFAULTS = {
    # Train V2 (the default in 2.60; set so a job's driver and workers agree).
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(HEALTH_CHECK_INTERVAL_S),
    # Tune's own console tables off: the sweep prints one line per trial event.
    "RAY_AIR_NEW_OUTPUT": "0",
    # In-trial runs checkpoint every epoch by design; Tune's "snapshotting may become
    # a bottleneck" warning would fire for every short trial.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # Snapshot Tune's experiment state (trials + searcher) at every step, not every
    # 10 s or more: a driver killed between two snapshots would forget started trials.
    "TUNE_GLOBAL_CHECKPOINT_S": "0",
    # Train V2's preemption watcher polls Ray's drain notices every 5 s by default; a
    # spot node's notice can come 30 s before it goes: look every second (one GCS call).
    "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "1",
    # A trial's mid-epoch checkpoint reports (checkpoint.every_n_steps, a drain notice's
    # just-in-time checkpoint) carry no metric; Tune's check would fail the trial on
    # them. raysweep checks its own: an epoch report without the sweep's metric or a
    # constrained one fails the run naming it (MissingMetricError).
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}


def set_ray_env_defaults() -> None:
    """Ray's settings raysweep relies on, unless the user set them (before Ray starts)."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def set_base_dir(path: str) -> None:
    """RAYSWEEP_BASE_DIR: where a submitted job's relative spec paths point (its
    driver leaves Ray's unpacked working dir, see config.load.leave_ray_working_dir)."""
    os.environ.setdefault("RAYSWEEP_BASE_DIR", path)


def quiet_mlflow_downloads() -> None:
    """MLflow's artifact progress bars off: an error about a missing record stays one line."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def set_deterministic_cublas() -> None:
    """cuBLAS needs a fixed workspace for deterministic kernels (`deterministic: true`)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def use_token_auth() -> None:
    """Make this process send the token RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH name now:
    Ray's clients add it when the mode is token, and read the mode once into
    `ray._raylet.Config`, so re-read it."""
    if os.environ.get("RAY_AUTH_MODE") == "disabled":
        return
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # (Cython)

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")
    # The loader caches the first token it read; this process may talk to another
    # cluster (another token) now.
    AuthenticationTokenLoader.instance().reset_cache()


def gcs_refuses_token(gcs_address: str, timeout_s: float = 5.0) -> bool:
    """True when the GCS at host:port refuses this process's token (or its lack of
    one) on a single request: `ray.init` retries such a refusal for about 20 s
    before it raises. Any other outcome (an answer, a timeout, another error) is False:
    `ray.init` then says what it finds. Uses Ray's Cython GCS client
    (`ray._raylet.GcsClient`), whose refusal is `ray.exceptions.AuthenticationError`."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # (Cython)
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=gcs_address).internal_kv_get(b"session_name", namespace=b"session", timeout=timeout_s)
    except AuthenticationError:
        return True
    except Exception:  # noqa: BLE001 - not ours to judge: ray.init reports it
        return False
    return False


def generate_token() -> str:
    """A new cluster token, as `ray get-auth-token --generate` makes it."""
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    return generate_new_authentication_token()


def record_cluster_address(gcs_address: str) -> None:
    """Point $RAY_TMPDIR/ray/ray_current_cluster (the cluster's own temp folder,
    `cluster.isolation`) at the in-process cluster: Ray's own actors
    (Train V2's placement-group cleaner, via the state API) find "the cluster" through
    it, and left pointing at a cluster that `ray start` ran earlier their lookups time
    out, the cleaner's thread dies, and CPUs of trials Tune stopped are never freed."""
    from ray._private.utils import write_ray_address

    write_ray_address(gcs_address)


def walk_upload(root: Path, handle: Callable[[Path], None]) -> None:
    """Call `handle` on each path Ray's job upload would include from `root` (its own
    .gitignore/.rayignore rules: `ray._private.runtime_env.packaging._dir_travel`)."""
    from ray._private.runtime_env.packaging import _dir_travel

    quiet = logging.getLogger("raysweep.upload")
    quiet.setLevel(logging.WARNING)
    _dir_travel(root, [], handle, include_gitignore=True, logger=quiet)


def local_provider_state(cluster_name: str) -> Path:
    """Where Ray's cluster launcher keeps, on the machine running `ray up`, the `local`
    provider's nodes and their tags (what it set up on each, with which file mounts):
    `ray/autoscaler/_private/local/config.py: get_state_path` (the Ray temp dir:
    RAY_TMPDIR, else TMPDIR, else /tmp)."""
    from ray.autoscaler._private.local.config import get_state_path

    return Path(get_state_path(cluster_name))


def validate_launcher_config(raw: dict[str, Any]) -> None:
    """Ray's own cluster-launcher schema check, as `ray up` runs it (raises
    jsonschema.ValidationError, ValueError, KeyError or RuntimeError)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(raw))


def replace_tuner_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """A restored Tuner keeps the callbacks it pickled (`Tuner._local_tuner._run_config`);
    the resumed run's callbacks replace them."""
    tuner._local_tuner._run_config.callbacks = callbacks


def replace_tuner_searcher(tuner: Any, searcher: Any) -> None:
    """A restored Tuner keeps the searcher it pickled at the sweep's start
    (`Tuner._local_tuner._tune_config.search_alg`); the resumed run's searcher, rebuilt
    from the study, replaces it (Tune then still restores Tune's own snapshot of the
    searcher into it, which raysweep's searcher overrides with the study's state)."""
    tuner._local_tuner._tune_config.search_alg = searcher


def persist_trials_before_they_start() -> None:
    """Make Tune store its experiment state (trial table and searcher), and wait for the
    upload, before each trial's actor starts (`TuneController._actor_started`). Tune
    saves that state at every step but uploads it in the background, skipping an
    upload while one runs: a driver killed within that lag left a started trial out of
    the stored state, and `--resume` then ran a new trial in its place (an extra,
    KILLED MLflow child). Now a trial that trains is in the stored state; the cost is
    one awaited upload of a few small files per trial start. Idempotent (patches the
    class once per process)."""
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController._actor_started
    if getattr(original, "_raysweep_persists", False):
        return

    def _actor_started(self: Any, tracked_actor: Any, log: str = "STARTED") -> None:
        self.checkpoint(force=True, wait=True)
        original(self, tracked_actor, log)

    _actor_started._raysweep_persists = True  # type: ignore[attr-defined]
    TuneController._actor_started = _actor_started  # type: ignore[method-assign]


def one_failure_per_actor_death() -> None:
    """Make Tune count a trial actor's death once, also when it dies while being reused.

    With `reuse_actors` (a sweep's one-worker trials), a new trial takes a finished
    trial's actor and Tune runs `reset` on it while the trial is still PENDING. When
    that actor dies then (its node cut off or lost), Ray's actor manager hands the one
    RayActorError to two callbacks (`ActorManager._actor_task_failed`): the actor's
    (`TuneController._actor_failed`, which processes a failure for a PENDING trial:
    one failure counted, the trial requeued) and the `reset` task's (which processes it
    again: a second failure counted, and the trial, PENDING now, is errored whatever
    `failure.max_failures` says). The trial also stayed in `_resetting_trials`, so it
    would never get an actor again. Seen in tests/faults/test_cross_host.py (a worker
    host cut off): one node loss failed a trial that max_failures=1 should have
    retried. Now one exception is processed once per trial, and a trial whose actor
    died leaves `_resetting_trials`. Idempotent (patches the class once per process)."""
    from ray.tune.execution.tune_controller import TuneController

    original_failure, original_actor_failed = TuneController._trial_task_failure, TuneController._actor_failed
    if getattr(original_failure, "_raysweep_once", False):
        return

    def _trial_task_failure(self: Any, trial: Any, exception: Exception) -> None:
        seen = exception.__dict__.setdefault("_raysweep_processed_for", set())
        if trial.trial_id in seen:
            logging.getLogger(__name__).debug("trial %s: %r already processed", trial, exception)
            return
        seen.add(trial.trial_id)
        original_failure(self, trial, exception)

    def _actor_failed(self: Any, tracked_actor: Any, exception: Exception) -> None:
        trial = self._actor_to_trial.get(tracked_actor)
        if trial is not None:
            self._resetting_trials.discard(trial)
        original_actor_failed(self, tracked_actor, exception)

    _trial_task_failure._raysweep_once = True  # type: ignore[attr-defined]
    TuneController._trial_task_failure = _trial_task_failure  # type: ignore[method-assign]
    TuneController._actor_failed = _actor_failed  # type: ignore[method-assign]


BEFORE_TUNE_STATE_SAVE: list[Callable[[], None]] = []
"""Called, in order, before each save of Tune's experiment state (the patched
`save_to_dir` below). A sweep puts its MLflow writer's flush here: Tune's stored state
then never records a trial event (a result, a trial's end) whose MLflow write is still
queued, so a driver lost right after a save leaves nothing that a resumed sweep (which
does not replay those events) would miss."""


def atomic_tune_state() -> None:
    """Make every file of Tune's stored experiment state (trial table, searcher) whole at
    any moment, so that a driver killed at any point leaves a state `Tuner.restore` reads.

    Seen (test_killed_sweep_driver_resumes_without_rerunning_trials[local], beside a CPU
    hog): the stored `experiment_state-*.json` (and in one run `search_gen_state-*.json`
    and `searcher-state-*.pkl`) empty at the kill; `Tuner.restore` then logged "Failed to
    restore the run state", restarted the experiment without its trials, and the trial
    that was training was lost. Two causes, both fixed here:

    - `TuneController.save_to_dir` writes the experiment state in place (open "w", then
      dump) in the driver's staging folder while the background upload of the previous
      step may be copying it: the copy can read an empty file. It is now written to a
      temporary name and renamed (as Tune already does for the searcher's files).
    - The upload (`_FilesystemSyncer._sync_up_command`, `pyarrow.fs.copy_files`) truncates
      each destination file and then writes it: on a *local* storage path each file is now
      copied to a temporary name and renamed over the old one, and a source file that
      vanished during the walk (Tune's own temporary files) is skipped instead of aborting
      the upload. Object stores need no change (an object appears whole), and uploads with
      exclude patterns keep Ray's path.

    Idempotent (patches the classes once per process)."""
    _atomic_experiment_state_save()
    _atomic_local_uploads()


def _atomic_experiment_state_save() -> None:
    """`TuneController.save_to_dir` as in Ray 2.60 (`ray/tune/execution/tune_controller.py`),
    with the experiment state written to a temporary file and renamed."""
    import json
    import uuid

    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.utils.serialization import TuneFunctionEncoder

    original = TuneController.save_to_dir
    if getattr(original, "_raysweep_atomic", False):
        return

    def save_to_dir(self: Any) -> None:
        for hook in list(BEFORE_TUNE_STATE_SAVE):  # (e.g. the sweep's MLflow writes: see the list)
            hook()
        runner_state = {
            "trial_data": list(self._get_trial_checkpoints().values()),
            "runner_data": self.__getstate__(),
            "stats": {"start_time": self._start_time},
        }
        staging = self._storage.experiment_driver_staging_path
        os.makedirs(staging, exist_ok=True)
        final = Path(staging, self.experiment_state_file_name)
        tmp = final.with_name(f".{uuid.uuid4().hex[:8]}-tmp-{final.name}")
        with open(tmp, "w") as f:
            json.dump(runner_state, f, cls=TuneFunctionEncoder)
        os.replace(tmp, final)
        self._search_alg.save_to_dir(staging, session_str=self._session_str)
        self._callbacks.save_to_dir(staging, session_str=self._session_str)

    save_to_dir._raysweep_atomic = True  # type: ignore[attr-defined]
    save_to_dir._raysweep_original = original  # type: ignore[attr-defined]  # (tests compare it with Ray's)
    TuneController.save_to_dir = save_to_dir  # type: ignore[method-assign]


def _atomic_local_uploads() -> None:
    import shutil
    import uuid

    import pyarrow.fs as pafs
    from ray.train._internal.storage import _FilesystemSyncer

    original = _FilesystemSyncer._sync_up_command
    if getattr(original, "_raysweep_atomic", False):
        return

    def local_root(fs: Any, fs_path: str) -> str | None:
        if isinstance(fs, pafs.LocalFileSystem):
            return fs_path
        if isinstance(fs, pafs.SubTreeFileSystem) and isinstance(fs.base_fs, pafs.LocalFileSystem):
            return os.path.join(fs.base_path, fs_path.lstrip("/"))
        return None

    def upload(local_path: str, dest: str) -> None:
        for folder, _, files in os.walk(local_path):
            target = os.path.join(dest, os.path.relpath(folder, local_path))
            os.makedirs(target, exist_ok=True)
            for name in files:
                if name.startswith("."):  # (a temporary file being written)
                    continue
                tmp = os.path.join(target, f".{name}.{uuid.uuid4().hex[:8]}.raysweep-tmp")
                try:
                    shutil.copyfile(os.path.join(folder, name), tmp)
                except FileNotFoundError:  # (a temporary file Tune renamed meanwhile)
                    continue
                os.replace(tmp, os.path.join(target, name))

    def _sync_up_command(self: Any, local_path: str, uri: str, exclude: Any = None) -> Any:
        dest = local_root(self.storage_filesystem, uri)
        if dest is None or exclude or not os.path.isdir(local_path):
            return original(self, local_path, uri, exclude)
        return upload, {"local_path": local_path, "dest": dest}

    _sync_up_command._raysweep_atomic = True  # type: ignore[attr-defined]
    _FilesystemSyncer._sync_up_command = _sync_up_command  # type: ignore[method-assign]


def draining_nodes() -> dict[str, int]:
    """Ray Core's nodes under a drain notice, as {node id (hex): deadline in ms since the
    epoch, 0 when the notice has none}: one GCS call, the one Train V2's own preemption
    watcher makes (`ray/train/v2/_internal/execution/preemption.py`), from any
    process connected to the cluster."""
    import ray._private.state

    return dict(ray._private.state.state.get_draining_nodes())


_DRAIN_SEEN_AT: dict[str, float] = {}


def train_drain_deadline() -> float | None:
    """In a Ray Train worker: the Unix time at which a node of this worker group will be
    taken away, once Train V2's preemption watcher has told the worker of a drain
    notice (`ray drain-node --reason PREEMPTION`), else None. Read from the worker's
    own context (`get_train_context().preemption_context`), no collective; a notice
    without a deadline gets Train's own default (DEFAULT_PREEMPTION_DEADLINE_S after
    it was first seen)."""
    import time

    from ray.train.v2._internal.constants import DEFAULT_PREEMPTION_DEADLINE_S
    from ray.train.v2._internal.execution.context import get_train_context

    info = get_train_context().preemption_context.preemption_info
    if info is None:
        return None
    if info.deadline_ms:
        return float(info.deadline_ms) / 1000
    seen = _DRAIN_SEEN_AT.setdefault(",".join(info.preempted_node_ids), time.time())
    return seen + DEFAULT_PREEMPTION_DEADLINE_S
