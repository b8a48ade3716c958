"""Tune's stored experiment state, made safe to resume from (the patches here exist
because `Tuner.restore` trusts that state; resuming from the Optuna journal instead,
issue 26, would remove them): a trial is in the stored state before it trains, every
stored file is whole at any moment, the MLflow writer is flushed before each save, and
a restored Tuner gets the resumed run's callbacks and searcher.

Why private: Tune offers no hook into when or how it saves its state, and a restored
Tuner's callbacks and searcher are fixed at the first run. Recheck on an upgrade: the
pinned sources below (save_to_dir is a copy of Ray 2.60's body; compare it line by
line), then tests/integration/test_tune_state.py and the killed-driver fault cases.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raysweep._upstream import Pin

CHECKED = ("2.60.0", "2.61.0")
PINS: list[Pin] = [  # (python -m raysweep._upstream prints the current digests)
    Pin('ray.tune.execution.tune_controller:TuneController._actor_started', 'b3782cc959a2f841'),
    Pin('ray.tune.execution.tune_controller:TuneController.save_to_dir', '12db40e542d7e1d9'),
    Pin('ray.train._internal.storage:_FilesystemSyncer._sync_up_command', 'd31bd531ee857d7c'),
    Pin('ray.tune.impl.tuner_internal:TunerInternal.__init__', '69e133170258ef3e'),
]


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
    _actor_started._raysweep_original = original  # type: ignore[attr-defined]
    TuneController._actor_started = _actor_started  # type: ignore[method-assign]



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
    _sync_up_command._raysweep_original = original  # type: ignore[attr-defined]
    _FilesystemSyncer._sync_up_command = _sync_up_command  # type: ignore[method-assign]
