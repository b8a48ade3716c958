"""The Python API behind `raysweep train` and `raysweep tune`.

Each call validates everything that can refuse input (spec, profile, data schema,
trainer, the cluster's capacity) before any MLflow run exists, then connects to
Ray, opens the MLflow run(s), writes the run record, runs, and closes every run
with its end status. Ray started here is shut down on the way out.

    import raysweep
    result = raysweep.tune("search_spaces/digits_mlp.yaml", ["budget.num_trials=4"])
    print(result.best_trial.params if result.best_trial else "no trial finished")
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raysweep.cluster.connect import cluster_capacity, connected, smallest_object_store
from raysweep.config.load import storage_root
from raysweep.config.profile import ClusterProfile
from raysweep.config.spec import Spec
from raysweep.data.loader import choose_loader, worker_data
from raysweep.data.storage import uri_of, use_patient_io
from raysweep.driver.plan import execution_mode, max_concurrent_trials, plan_from_spec, sweep_metrics
from raysweep.driver.sweep import find_sweep_to_resume, run_sweep
from raysweep.driver.trainer import TrainMetricsCallback, build_trainer
from raysweep.errors import RunFailedError, UserInputError, cause_of, one_line_cause
from raysweep.prepare import Prepared, prepare
from raysweep.report import Report
from raysweep.tracking import tags as tag
from raysweep.tracking.buffer import WriteBehind
from raysweep.tracking.callbacks import SweepTracker
from raysweep.tracking.html_report import write_report
from raysweep.tracking.record import RECORD_FILE, build_record, data_fingerprint, save_record
from raysweep.tracking.store import RunStore, tracking_uri
from raysweep.tracking.study import check_journal
from raysweep.tracking.trials import SweepResult, SweepState
from raysweep.worker.plan import ExecutionMode, RunPlan

SpecLike = str | Path | Spec


@dataclass
class TrainResult:
    run_name: str
    run_id: str
    tracking_uri: str
    metrics: dict[str, float]
    checkpoint: str | None


def spec_yaml(spec: Spec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def sweep_params(spec: Spec) -> dict[str, Any]:
    """The parent run's params: fixed params and the sweep's settings, flattened."""
    return {"params": spec.params, "sampler": spec.sampler.model_dump(), "scheduler": spec.scheduler.model_dump(),
            "budget": spec.budget.model_dump(), "scaling": spec.scaling.model_dump(), "trainer": spec.trainer,
            "seed": spec.seed}


def _plan(run: Prepared, mode: ExecutionMode, echo: bool = True) -> RunPlan:
    """The run plan, on the connected cluster: the loader chosen, and the memory
    loader's columns read once into Ray's object store."""
    loader, reason = choose_loader(run.spec.data.loader, run.data, smallest_object_store())
    if echo:
        print(f"data: {loader} loader: {reason}", flush=True)
        if run.spec.data.cache == "gpu" and (loader == "stream" or not run.spec.scaling.gpus_per_worker):
            why = "the stream loader reads each rank's rows from storage" if loader == "stream" else \
                "the workers have no GPU (scaling.gpus_per_worker is 0)"
            print(f"data: cache gpu has no effect: {why}", flush=True)
    arrays = worker_data(loader, run.data)
    return plan_from_spec(run.spec, storage_root(run.spec.storage_path, run.spec.name), arrays, mode, loader, reason)


def sweep_capacity(profile: ClusterProfile, echo: bool = False) -> tuple[float, float]:
    """(CPUs, GPUs) a sweep sizes its concurrency by: an autoscaling profile's node
    types at their maximum counts (its worker nodes may all be down now: pending
    trials make the autoscaler add them), else what the connected cluster has."""
    if not profile.node_types:
        return cluster_capacity()
    capacity = profile.max_capacity()
    if echo:
        print(f"cluster: autoscaling {profile.name}: sized for its node types at their maximum counts "
              f"({capacity['CPU']:g} CPUs, {capacity['GPU']:g} GPUs)", flush=True)
    return capacity["CPU"], capacity["GPU"]


def _record(kind: str, run: Prepared, plan: RunPlan, name: str, store: RunStore, run_id: str, folder: str,
            fingerprint: str) -> None:
    store.set_tags(run_id, {tag.KIND: kind, tag.RUN_FOLDER: folder, tag.LOADER: plan.data.loader,
                            tag.LOADER_REASON: plan.data.loader_reason})
    store.log_text(run_id, spec_yaml(run.spec), "spec.yaml")
    record, diff = build_record(kind, run.spec, run.data, run.source, list(run.overrides), run.profile, name,
                                fingerprint)
    record["data"]["loader"] = {"loader": plan.data.loader, "reason": plan.data.loader_reason}
    save_record(record, diff, store, run_id, folder)


def root_cause(exc: BaseException) -> str:
    """One line: the trainer's exception as its rank saw it (errors.cause_of), else the
    innermost error's root cause read from Ray's text (errors.one_line_cause: a process
    Ray killed raised nothing of raysweep's)."""
    cause = cause_of(exc)
    if cause is not None:
        return cause.line()
    while True:  # (Ray Train's ControllerError holds the controller's own exception)
        inner = exc.__cause__ or getattr(exc, "controller_failure", None)
        if not isinstance(inner, BaseException) or inner is exc:
            return one_line_cause(f"{type(exc).__name__}: {exc}")
        exc = inner


def train(spec: SpecLike, overrides: list[str] | tuple[str, ...] = (), *, cluster: str | None = None,
          address: str | None = None, name: str | None = None, source: str | None = None,
          fingerprint: str = "footer", force: bool = False) -> TrainResult:
    """One data-parallel training run at the spec's fixed params, recorded in MLflow.

    Re-using `name` resumes the run from its latest checkpoint, with the spec and data
    it started with (only `scheduler.max_epochs` may grow; `force` resumes anyway). `fingerprint`: how the
    record identifies the data, "footer" (size, mtime or ETag, footer hash) or "full"
    (a sha256 of every byte: slow for big data). Raises UserInputError
    (bad input, nothing started) or RunFailedError (the run failed; MLflow run FAILED).
    """
    run = prepare(spec, overrides, cluster=cluster, address=address, source=source)
    run_name = name or f"{run.spec.name}-train"
    if not force:
        refuse_a_changed_spec(run, run_name)
    use_patient_io()  # (checked: from here on a storage blip is retried, not fatal)
    started_at = time.time()
    with connected(run.profile, run.address):
        plan = _plan(run, ExecutionMode.WORKER_GROUP)
        store = RunStore(tracking_uri(), run.spec.name)
        run_id = store.open(f"train/{run_name}", run_name, params=run.spec.params)
        folder = f"{plan.storage_path}/{run_name}"
        _record("train", run, plan, run_name, store, run_id, folder, fingerprint)
        status = "FAILED"
        try:
            callback = TrainMetricsCallback(store.uri, run.spec.name, run_id, started_at)
            result = build_trainer(plan, run_name, callbacks=[callback]).fit()
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as exc:
            raise RunFailedError(
                f"training run {run_name!r} failed: {root_cause(exc)}; its checkpoints in {folder}: fix the "
                f"cause and re-run the same command (--name {run_name}) to resume from the latest") from exc
        finally:
            store.close(run_id, status)
        checkpoint = uri_of(result.checkpoint.filesystem, result.checkpoint.path) if result.checkpoint else None
        if checkpoint:
            store.set_tags(run_id, {tag.CHECKPOINT: checkpoint})
    metrics = dict(Report.from_ray(result.metrics).metrics) if result.metrics else {}
    return TrainResult(run_name, run_id, store.uri, metrics, checkpoint)


def spec_changes(recorded: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two dumped specs (sections
    compared field by field; params, space and any other mapping key by key)."""
    changed = []
    for key in sorted(set(recorded) | set(now)):
        old, new = recorded.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += spec_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key}")
    return changed


def refuse_a_changed_spec(run: Prepared, run_name: str) -> None:
    """A `train` that would resume `run_name` from its checkpoints refuses a spec or
    data other than those it started with (MLflow keeps the first params; the
    checkpoint holds a model of the first spec): only scheduler.max_epochs may grow."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from raysweep.tracking.lookup import read_record

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return  # (no store yet: nothing to resume, and nothing is created here)
    try:
        store = MlflowClient(uri)
        experiment = store.get_experiment_by_name(run.spec.name)
        found = [] if experiment is None else store.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`{tag.KEY}` = 'train/{run_name}'", max_results=1)
    except MlflowException:
        return  # (no store yet, or not reachable: train() says so when it opens the run)
    if not found:
        return
    try:
        recorded = read_record(found[0])
    except UserInputError:
        return  # (a run recorded before records existed)
    changed = spec_changes(recorded["spec"], run.spec.model_dump(mode="json"))
    grown = "scheduler.max_epochs"
    if grown in changed and run.spec.scheduler.max_epochs > int(recorded["spec"]["scheduler"]["max_epochs"]):
        changed.remove(grown)
    data = recorded.get("data", {})
    if data.get("sha256") != data_fingerprint(run.data, data.get("mode", "footer"))["sha256"]:
        changed.append("data (its files' fingerprint)")
    if changed:
        raise UserInputError(
            f"{run.source}: {', '.join(changed)}: differ from what run {run_name!r} started with (MLflow run "
            f"{found[0].info.run_id}); re-running it resumes its checkpoints: use the same spec, another --name "
            "for a new run, or --force to resume it with these changes")


RESUME_MAY_CHANGE = (("budget", "max_hours"), ("budget", "max_gpu_hours"), ("budget", "max_failed_trials"),
                     ("budget", "total_epochs"), ("scaling", "pending_timeout_s"))
"""(section, field)s a resumed sweep may be given anew."""


def resume_target(run: Prepared, resume: bool | str | None, echo: bool = True) -> str | None:
    """The sweep id a resume continues, refused (before Ray) when the spec changed or
    its journal is corrupt (a record cut off at its end is dropped, and said)."""
    if not resume:
        return None
    root = storage_root(run.spec.storage_path, run.spec.name)
    sweep_id = find_sweep_to_resume(root, run.spec.name, None if resume is True else str(resume))
    record_file = Path(root) / sweep_id / RECORD_FILE
    if "://" not in root and record_file.is_file():
        recorded = json.loads(record_file.read_text())["spec"]
        now = run.spec.model_dump(mode="json")
        for spec_dict in (recorded, now):  # (a resumed sweep may be given a new time or failure budget)
            for section, key in RESUME_MAY_CHANGE:
                spec_dict.get(section, {}).pop(key, None)
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        if changed:
            raise UserInputError(f"{run.source}: {', '.join(changed)}: differ from the spec sweep {sweep_id} "
                                 f"started with ({record_file}); resume with the same spec and --set values")
    note = check_journal(f"{root.rstrip('/')}/{sweep_id}", run.spec.name)
    if note and echo:
        print(f"resuming sweep {sweep_id}: {note}", flush=True)
    return sweep_id


def new_sweep_id(root: str, name: str) -> str:
    """NAME-YYYYmmdd-HHMMSS-XXXXXXXX (8 random hex digits), claimed before anything is
    written under it: two sweeps of one spec started in the same second, on two
    machines writing to one bucket, get different folders, MLflow parent runs and
    journals. A local (or NFS) folder is claimed by creating it (mkdir fails when it
    exists); an object store has no atomic create through pyarrow, so there the id is
    taken only if no object is under it yet, and the random part makes two same-second
    ids collide with probability 2**-32. Ids sort by start time."""
    import secrets

    from raysweep.data.storage import filesystem

    fs, base = filesystem(root)
    for _ in range(16):
        sweep_id = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        path = f"{base.rstrip('/')}/{sweep_id}"
        if "://" not in root:
            Path(base).mkdir(parents=True, exist_ok=True)
            try:
                Path(path).mkdir()
            except FileExistsError:
                continue
            return sweep_id
        if fs.get_file_info(path).type.name == "NotFound":
            return sweep_id
    raise RunFailedError(f"{root}: could not claim a new sweep id for {name!r} in 16 tries")


def searched_names(spec: Spec, state: SweepState) -> list[str]:
    """The space's params, then those a `space_function` drew (from the trials' configs)."""
    names = list(spec.space)
    for record in state.trials.values():
        names += [n for n in record.params if n not in names and n not in spec.params]
    return names


def tune(spec: SpecLike, overrides: list[str] | tuple[str, ...] = (), *, cluster: str | None = None,
         address: str | None = None, resume: bool | str | None = None, report: bool = True,
         register: bool | str | None = None, echo: bool = True, store: RunStore | None = None,
         fingerprint: str = "footer", pick: str | None = None) -> SweepResult:
    """An Optuna sweep of data-parallel trials on Ray Tune, logged to MLflow.

    `resume` (True: the newest sweep of this spec, or a sweep id) continues an
    interrupted sweep. `report` writes the HTML report at the end; `register` (True,
    or a model name) registers the best trial's model (`pick`: a multi-objective
    sweep's front member with the best value of that objective). `store` replaces
    the MLflow store (tests and benchmarks). Trials that fail are recorded, not raised.
    """
    run = prepare(spec, overrides, cluster=cluster, address=address)
    use_patient_io()  # (checked: from here on a storage blip is retried, not fatal)
    if pick is not None and (not register or pick not in run.spec.scheduler.metrics):
        raise UserInputError(f"--pick {pick}: " + ("needs --register" if not register else
                             f"not an objective of this sweep (scheduler.metric: {run.spec.scheduler.metric})"))
    resumed = resume_target(run, resume, echo)
    sweep_id = resumed or new_sweep_id(storage_root(run.spec.storage_path, run.spec.name), run.spec.name)
    driver_resources = run.profile.trial_driver_resources
    with connected(run.profile, run.address):
        concurrency = max_concurrent_trials(run.spec.scaling, run.spec.budget, *sweep_capacity(run.profile, echo))
        if run.profile.node_types and run.profile.trial_driver_resources:  # (one pinned driver per trial)
            concurrency = max(1, min(concurrency, int(run.profile.driver_slots() + 1e-9)))
        plan = dataclasses.replace(_plan(run, execution_mode(run.spec.scaling, driver_resources), echo),
                                   required_metrics=sweep_metrics(run.spec))
        store = store or RunStore(tracking_uri(), run.spec.name)
        parent_id = store.open(f"sweep/{sweep_id}", sweep_id, params=sweep_params(run.spec))
        scheduler = run.spec.scheduler
        # (trial writes retried while a tracking server does not answer: see tracking.buffer)
        tracker = SweepTracker(WriteBehind(store), sweep_id, parent_id, scheduler.primary, scheduler.primary_mode,
                               scheduler.max_epochs, echo=echo,
                               objectives=list(zip(scheduler.metrics, scheduler.modes, strict=True)),
                               constraints=run.spec.parsed_constraints(),
                               trial_resources=(plan.placement.num_workers * plan.placement.cpus_per_worker,
                                                plan.placement.num_workers * plan.placement.gpus_per_worker),
                               budget=(run.spec.budget.num_trials, run.spec.budget.total_epochs))
        resumed_trials = tracker.load_existing() if resumed else None
        if resumed_trials is not None and echo:
            print(f"resuming sweep {sweep_id}: {resumed_trials} trial(s) recorded so far", flush=True)
        if not resumed:
            _record("sweep", run, plan, sweep_id, store, parent_id, f"{plan.storage_path}/{sweep_id}", fingerprint)
        status = "FAILED"
        try:
            outcome = run_sweep(run.spec, plan, sweep_id, tracker, concurrency, driver_resources, bool(resumed))
            status = "FINISHED"
            if outcome.stopped_by:  # (its budget: the parent run says which; --resume continues it)
                status = "KILLED"
                tracker.writer.store.set_tags(parent_id, {tag.STOPPED_BY: outcome.stopped_by})
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracker.close(status)
    result = SweepResult(sweep_id, run.spec.name, parent_id, store.uri, outcome.sweep_dir, tracker.state,
                         outcome.wall_s, searched_names(run.spec, tracker.state), resumed_trials,
                         stopped_by=outcome.stopped_by, trial_resources=tracker.writer.trial_resources)
    if report:
        try:
            result.report = write_report(parent_id)
        except Exception as exc:  # a report that cannot be drawn must not fail a finished sweep
            result.warnings.append(f"no sweep report: {type(exc).__name__}: {exc}")
    if register and result.ok:
        # (lazy: the registry imports mlflow.pytorch, slow to load and needed only here)
        from raysweep.registry import register as register_model

        result.registered = register_model(parent_id, None if register is True else str(register),
                                           pick if run.spec.scheduler.multi_objective else None)
    return result
