"""Driver side of a Train worker-group run: the TorchTrainer and its MLflow callback.

Used by `raysweep train` and by each ExecutionMode.WORKER_GROUP trial.
"""

from __future__ import annotations

from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import UserCallback
from ray.train.v2.api.config import ScalingConfig  # (ray.train.ScalingConfig with Train V2 on)

from raysweep._ray_compat import set_ray_env_defaults
from raysweep._upstream import train as upstream_train
from raysweep.data.storage import run_storage, uri_of
from raysweep.report import Report
from raysweep.tracking import tags as tag
from raysweep.tracking.buffer import WriteBehind
from raysweep.tracking.store import RunStore, record_preemption
from raysweep.worker.entry import train_in_worker_group
from raysweep.worker.plan import RunPlan


def checkpoint_config(plan: RunPlan) -> CheckpointConfig:
    keep = plan.checkpoints
    return CheckpointConfig(num_to_keep=keep.num_to_keep, checkpoint_score_attribute=keep.score_metric,
                            checkpoint_score_order=keep.score_mode)


def build_trainer(plan: RunPlan, run_name: str, callbacks: list[Any], storage_path: str | None = None) -> TorchTrainer:
    """A TorchTrainer whose workers run `plan.trainer` on the plan's data.

    Re-running with the same `run_name` and storage resumes from the latest
    checkpoint (Ray Train V2 behaviour).
    """
    set_ray_env_defaults()  # the controller inherits the health-check interval
    place = plan.placement
    workers: int | tuple[int, int] = place.num_workers if not place.elastic else \
        (place.min_workers or place.num_workers, place.num_workers)  # (elastic: Train resizes between the two)
    return upstream_train.RaysweepTorchTrainer(
        train_in_worker_group,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=place.use_gpu,
                                     resources_per_worker=place.worker_resources(),
                                     elastic_resize_monitor_interval_s=place.elastic_check_s),
        run_config=RunConfig(
            name=run_name,
            **run_storage(storage_path or plan.storage_path),
            callbacks=callbacks,
            checkpoint_config=checkpoint_config(plan),
            failure_config=FailureConfig(max_failures=plan.max_failures),
        ),
    )


class TrainMetricsCallback(UserCallback):
    """Logs each reported epoch of one `raysweep train` run to its MLflow run (runs in
    the Train controller, on the driver's node)."""

    def __init__(self, uri: str, experiment_name: str, run_id: str, started_at: float) -> None:
        self.uri, self.experiment_name, self.run_id = uri, experiment_name, run_id
        self.started_at = started_at
        self._store: WriteBehind | None = None
        self.preemptions = 0

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if self._store is None:
            # (a tracking server that stops answering: the writes are retried with backoff, up
            # to raysweep.tracking.buffer.PATIENCE_S, and this report waits for them, where
            # MLflow's own retries would give up after about 2 minutes and fail the run)
            self._store = WriteBehind(RunStore(self.uri, self.experiment_name))
        try:
            self._log(metrics)
            if checkpoint is not None:  # (the run's latest checkpoint, mid-epoch ones too, as a sweep trial's)
                self._store.set_tags(self.run_id, {tag.CHECKPOINT: uri_of(checkpoint.filesystem, checkpoint.path)})
        finally:
            self._store.flush()

    def _log(self, metrics: list[dict[str, Any]]) -> None:
        assert self._store is not None
        report = Report.from_ray(metrics[0])
        self.preemptions = record_preemption(self._store, self.run_id, report, self.preemptions,
                                             lambda said: print(f"run {self.experiment_name}: {said}", flush=True))
        if report.mid_epoch:  # a checkpoint's report: no epoch metrics to log
            return
        values = report.mlflow_metrics()
        if report.first_step_unix is not None:
            values["startup_s"] = report.first_step_unix - self.started_at
        self._store.log_metrics(self.run_id, values, step=int(values.get("epoch", 0)))
