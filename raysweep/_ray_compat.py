"""Every environment variable raysweep sets (Ray's, and the few of MLflow, cuBLAS and
raysweep itself), checked against Ray 2.60.0: `tests/unit/test_ray_compat.py` fails
when Ray no longer reads one. Ray's private names are used only in
`raysweep._upstream` (one module per concern, each pinned to the upstream sources it
depends on).
"""

from __future__ import annotations

import os

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


def keep_stdlib_distutils() -> None:
    """torch.compile on CPU builds C++ through setuptools; when a library imported the
    standard library's distutils before setuptools came in, setuptools' distutils hack
    fails the compile ("AssertionError: .../distutils/core.py", seen in a fresh
    venv's test run). Keep the standard library's (Python 3.11 still has it) unless the
    user chose."""
    os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")


def set_deterministic_cublas() -> None:
    """cuBLAS needs a fixed workspace for deterministic kernels (`deterministic: true`)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
