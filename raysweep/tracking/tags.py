"""Every `raysweep.*` MLflow tag, defined once.

Runs are found again by these tags (`raysweep runs`, `reproduce`, `report`,
`register`, a resumed sweep re-attaching to its runs), so a name changed here
changes it everywhere.
"""

from __future__ import annotations

PARENT = "mlflow.parentRunId"
"""MLflow's own nesting tag: a trial's run points at its sweep's parent run."""
KEY = "raysweep.key"
"""`train/NAME`, `sweep/SWEEP_ID` or `SWEEP_ID/TRIAL_ID`: a re-run re-attaches to its run."""
KIND = "raysweep.kind"
"""train | sweep | trial"""
STATE = "raysweep.state"
"""A trial's TrialState name (FINISHED, STOPPED_EARLY, FAILED, KILLED)."""
RUN_FOLDER = "raysweep.run_folder"
CHECKPOINT = "raysweep.checkpoint"
"""The run's final (or latest) checkpoint directory."""
TRIAL_ID = "raysweep.trial_id"
TRIAL_CONFIG = "raysweep.trial_config"
"""A trial's sampled params as JSON."""
EARLY_STOPPED = "raysweep.early_stopped"
NODE = "raysweep.node"
"""The host (IP) a trial's process ran on, the latest: the report's timeline rows (from
Tune's node_ip in its results: a trial that failed before its first has none, and the
timeline puts it under "unknown host")."""
STOP_REASON = "raysweep.stop_reason"
"""Why the run stopped early by itself (not by the scheduler): e.g. a non-finite loss
under failure.on_nan: stop."""
ERROR = "raysweep.error"
"""A failed trial's one-line cause."""
PREEMPTIONS = "raysweep.preemptions"
"""How many drain notices (spot/preemptible node reclaims) the run checkpointed for."""
PREEMPTED_AT = "raysweep.preempted_at"
"""The latest one: where its just-in-time checkpoint was taken and the node's deadline."""
FAILURES = "raysweep.failures"
"""How many times a trial failed and was run again from its latest checkpoint (failure.max_failures)."""
BEST_TRIAL_ID = "raysweep.best_trial_id"
BEST_RUN_ID = "raysweep.best_run_id"
BEST_PREFIX = "raysweep.best."
"""`raysweep.best.<metric>` on the parent run: the best trial's metrics."""
FEASIBLE = "raysweep.feasible"
"""A trial of a sweep with constraints: whether its last epoch met them all."""
CONSTRAINT_VIOLATIONS = "raysweep.constraint_violations"
"""JSON {constraint: how far outside it (<= 0: met)} of the trial's last epoch."""
OBJECTIVES = "raysweep.objectives"
"""A multi-objective sweep's parent run: JSON [[metric, mode], ...]."""
PARETO_FRONT = "raysweep.pareto_front"
"""A multi-objective sweep's parent run: JSON [{trial_id, run_id, <metric>: value}]
of the Pareto front (also the artifact pareto_front.json)."""
LOADER = "raysweep.data.loader"
"""memory | stream: the loader the run used."""
LOADER_REASON = "raysweep.data.loader_reason"
"""Why: the setting, or auto's size comparison."""
GIT_COMMIT = "raysweep.git.commit"
GIT_DIRTY = "raysweep.git.dirty"
DATA_SHA256 = "raysweep.data.sha256"
DATA_SCHEMA_SHA256 = "raysweep.data.schema_sha256"
SEED = "raysweep.seed"
VERSION_PREFIX = "raysweep.version."
# On registered model versions.
RUN_ID = "raysweep.run_id"
SWEEP_RUN_ID = "raysweep.sweep_run_id"
TRAINER = "raysweep.trainer"

STOPPED_BY = "raysweep.stopped_by"
"""On a sweep's parent run: the budget that stopped it (budget.max_hours,
budget.max_failed_trials); `tune --resume` continues it."""
