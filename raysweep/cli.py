"""`raysweep check|train|tune SPEC`: load the spec, build, run, report.

Exit codes: 0 success, 2 invalid input (spec, data, config), 1 a run that failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from raysweep.data import ResolvedData, resolve_data
from raysweep.errors import RunFailedError, UserInputError
from raysweep.profile import check_storage, load_profile
from raysweep.spec import Spec, load_spec

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("spec", help="experiment spec (YAML), e.g. search_spaces/digits_mlp.yaml")
        sub.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY.PATH=VALUE", help="override a spec field (repeatable)")
        return sub

    check = add("check", "Validate the spec and the data's schema; starts no Ray.")
    check.add_argument("--cluster", metavar="PROFILE", help="also check the spec against this cluster profile")
    train = add("train", "One data-parallel training run at the spec's fixed params.")
    train.add_argument("--name", help="run name; re-using it resumes from the latest checkpoint "
                                      "(default: SPEC_NAME-train)")
    add("tune", "An Optuna sweep of data-parallel trials on Ray Tune.")
    for sub in (train, commands.choices["tune"]):
        sub.add_argument("--cluster", metavar="PROFILE",
                         help="cluster profile, e.g. cluster/local.yaml (default: a local cluster "
                              "started in-process)")
        sub.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else the profile's)")
    tune = commands.choices["tune"]
    tune.add_argument("--resume", nargs="?", const=True, metavar="SWEEP_ID",
                      help="continue an interrupted sweep (default: the newest of this spec): finished trials "
                           "are kept, unfinished ones continue from their checkpoints")
    tune.add_argument("--no-report", action="store_true", help="do not write the sweep report at the end")
    tune.add_argument("--register", nargs="?", const=True, metavar="MODEL_NAME",
                      help="register the best trial's model in the MLflow Model Registry (default name: the spec's)")
    runs = commands.add_parser("runs", help="List recorded raysweep runs (train runs, sweeps, trials).")
    runs.add_argument("--limit", type=int, default=30)
    reproduce = commands.add_parser(
        "reproduce", help="Re-run a recorded training run (or sweep trial) from its record and compare metrics.")
    reproduce.add_argument("run_id", help="MLflow run id of a train run or a sweep trial (see `raysweep runs`)")
    reproduce.add_argument("--force", action="store_true", help="run even if the data or versions changed")
    reproduce.add_argument("--tolerance", type=float, default=1e-6,
                           help="relative tolerance per metric value (default: %(default)g)")
    reproduce.add_argument("--cluster", metavar="PROFILE", help="cluster profile (default: local in-process)")
    reproduce.add_argument("--address", help="Ray cluster to join")
    report = commands.add_parser("report", help="Write a sweep's HTML report and PNGs; attach them to its parent run.")
    report.add_argument("sweep", help="sweep name, its MLflow parent run id, or its run folder")
    report.add_argument("--out", help="folder for the report (default: the sweep's run folder /report)")
    register = commands.add_parser("register", help="Register a run's model in the MLflow Model Registry.")
    register.add_argument("run_id", help="MLflow run id of a train run, a trial, or a sweep (its best trial)")
    register.add_argument("--name", help="registered model name (default: the spec's name)")
    submit = add("submit", "Submit `raysweep tune SPEC` as a Ray job to a cluster and follow its logs.")
    submit.add_argument("--cluster", metavar="PROFILE", default="cluster/local.yaml",
                        help="profile of a cluster started with `raysweep cluster up` (default: %(default)s)")
    submit.add_argument("--timeout", type=float, help="stop the job after this many seconds")
    cluster = commands.add_parser("cluster", help="Start, stop or inspect a local Ray cluster.",
                                  description="Start, stop or inspect a local Ray cluster from a profile.")
    cluster.add_argument("action", choices=["up", "down", "status"])
    cluster.add_argument("profile", nargs="?", default="cluster/local.yaml",
                         help="cluster profile (default: %(default)s); a Ray cluster launcher "
                              "config (cluster/aws.yaml, cluster/gcp.yaml) is handed over to `ray up`/`ray down`")
    cluster.add_argument("--dry-run", action="store_true",
                         help="with a launcher config: print the `ray` command instead of running it")
    return parser


def check_trainer(spec: Spec, data: ResolvedData, source: str) -> None:
    """The trainer module imports and defines train(ctx) or a usable LightningModule."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(spec.trainer)
    except Exception as exc:  # any import failure is the user's module
        raise UserInputError(
            f"{source}: trainer: cannot import {spec.trainer!r}: {type(exc).__name__}: {exc}"
        ) from None
    if callable(getattr(module, "train", None)):
        return
    from raysweep.lightning import check_module, find_module_factory

    factory = find_module_factory(module)
    if factory is None:
        raise UserInputError(
            f"{source}: trainer: module {spec.trainer!r} defines neither train(ctx) nor one "
            "LightningModule subclass (or build_module(params))"
        )
    check_module(factory, sample_params(spec), sample_batch(data), spec.lightning,
                 spec.scaling.use_gpu, source)


def sample_params(spec: Spec) -> dict[str, Any]:
    """The fixed params plus one value from each searched param (low, or first choice)."""
    picked = {name: getattr(p, "low", None) if p.type != "categorical" else p.choices[0]
              for name, p in spec.space.items()}
    return {**spec.params, **picked}


def sample_batch(data: ResolvedData, rows: int = 8) -> Any:
    import pyarrow.parquet as pq

    from raysweep.context import ArraySet
    from raysweep.data import table_to_columns

    table = pq.ParquetFile(data.train_files[0]).read_row_group(0, columns=data.columns).slice(0, rows)
    arrays = table_to_columns(table, data.columns)
    return ArraySet.from_columns(arrays, list(data.features), data.label).take(slice(0, rows))


def validate(args: argparse.Namespace) -> tuple[Spec, ResolvedData]:
    """Everything checked before Ray or MLflow start."""
    spec_path = args.spec
    spec = load_spec(spec_path, args.overrides)
    profile = load_profile(getattr(args, "cluster", None))
    check_storage(profile, spec.storage_path, spec_path)
    address = getattr(args, "address", None) or os.environ.get("RAY_ADDRESS") or profile.address
    if address and args.command in ("train", "tune"):
        from raysweep.cluster import check_reachable

        check_reachable(address)
    data = resolve_data(spec.data, spec_path)
    check_trainer(spec, data, spec_path)
    if data.num_train_rows < spec.scaling.num_workers:
        raise UserInputError(
            f"{spec_path}: scaling.num_workers: {spec.scaling.num_workers} workers need at least "
            f"as many training rows, got {data.num_train_rows}"
        )
    return spec, data


def cmd_check(spec: Spec, data: ResolvedData, args: argparse.Namespace) -> int:
    print(f"{args.spec}: ok: trainer {spec.trainer}, {len(data.features)} features, "
          f"{data.num_train_rows} train rows in {len(data.train_files)} file(s), "
          f"{data.num_validation_rows} validation rows, {len(spec.space)} searched params")
    return EXIT_OK


def cmd_train(spec: Spec, data: ResolvedData, args: argparse.Namespace) -> int:
    run_name = args.name or f"{spec.name}-train"
    run_id, uri, result = run_train(spec, data, args, run_name, args.spec, args.overrides)
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    print(f"run {run_name}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.endswith("_unix")))
    print(f"checkpoint: {result.checkpoint.path if result.checkpoint else None}")
    print(f"MLflow: {uri} experiment {spec.name!r}, run {run_id}")
    return EXIT_OK


def run_train(spec: Spec, data: ResolvedData, args: argparse.Namespace, run_name: str, spec_file: str,
              overrides: list[str]) -> tuple[str, str, Any]:
    """One training run, recorded; re-using `run_name` resumes it. Returns (MLflow run id, URI, Result)."""
    from raysweep.cluster import connected
    from raysweep.record import build_record, save_record
    from raysweep.runs import CHECKPOINT_TAG, FOLDER_TAG, KIND_TAG
    from raysweep.tracking import RunStore, TrainMetricsCallback, tracking_uri
    from raysweep.training import TrainJob, build_trainer, storage_root

    started_at = time.time()
    profile = load_profile(args.cluster)
    with connected(profile, args.address):
        job = TrainJob.from_spec(spec, data, storage_root(spec))
        store = RunStore(tracking_uri(), spec.name)
        run_id = store.open(f"train/{run_name}", run_name, params=spec.params)
        folder = f"{job.storage_path}/{run_name}"
        store.set_tags(run_id, {KIND_TAG: "train", FOLDER_TAG: folder})
        store.client.log_text(run_id, spec_yaml(spec), "spec.yaml")
        save_record(*build_record("train", spec, data, spec_file, overrides, profile, run_name), store, run_id, folder)
        status = "FAILED"
        try:
            callback = TrainMetricsCallback(store.uri, spec.name, run_id, started_at)
            result = build_trainer(job, spec.params, run_name, callbacks=[callback]).fit()
            status = "FINISHED"
            if result.checkpoint is not None:
                store.set_tags(run_id, {CHECKPOINT_TAG: result.checkpoint.path})
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as exc:
            raise RunFailedError(
                f"training run {run_name!r} failed: {root_cause(exc)}; its checkpoints in {folder}: fix the "
                f"cause and re-run the same command (--name {run_name}) to resume from the latest") from exc
        finally:
            store.close(run_id, status)
    return run_id, store.uri, result


def root_cause(exc: BaseException) -> str:
    """One line: the innermost error's last 'SomethingError: message' line (Ray wraps
    worker errors with tracebacks)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [ln.strip() for ln in f"{type(exc).__name__}: {exc}".splitlines() if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return line
    return lines[0] if lines else type(exc).__name__


def resume_target(spec: Spec, args: argparse.Namespace) -> str | None:
    """The sweep id `--resume` continues (checked before Ray starts), or None."""
    if not getattr(args, "resume", None):
        return None
    import json

    from raysweep.record import RECORD_FILE
    from raysweep.sweep import find_sweep_to_resume
    from raysweep.training import storage_root

    root = storage_root(spec)
    sweep_id = find_sweep_to_resume(root, spec.name, None if args.resume is True else args.resume)
    record_file = Path(root) / sweep_id / RECORD_FILE
    if record_file.is_file():
        recorded = json.loads(record_file.read_text())["spec"]
        now = spec.model_dump(mode="json")
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        if changed:
            raise UserInputError(f"{args.spec}: {', '.join(changed)}: differ from the spec sweep {sweep_id} "
                                 f"started with ({record_file}); resume with the same spec and --set values")
    return sweep_id


def cmd_tune(spec: Spec, data: ResolvedData, args: argparse.Namespace) -> int:
    from raysweep.cluster import cluster_capacity, connected
    from raysweep.record import build_record, save_record
    from raysweep.report import print_summary
    from raysweep.runs import FOLDER_TAG, KIND_TAG
    from raysweep.sweep import run_sweep
    from raysweep.tracking import RunStore, SweepTracker, tracking_uri
    from raysweep.training import TrainJob, storage_root

    profile = load_profile(args.cluster)
    resumed = resume_target(spec, args)
    sweep_id = resumed or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with connected(profile, args.address):
        job = TrainJob.from_spec(spec, data, storage_root(spec))
        store = RunStore(tracking_uri(), spec.name)
        parent_id = store.open(f"sweep/{sweep_id}", sweep_id, params=sweep_params(spec))
        folder = f"{job.storage_path}/{sweep_id}"
        tracker = SweepTracker(store, sweep_id, parent_id, spec.scheduler.metric,
                               spec.scheduler.mode, spec.scheduler.max_epochs)
        if resumed:
            print(f"resuming sweep {sweep_id}: {tracker.load_existing()} trial(s) recorded so far", flush=True)
        else:
            store.set_tags(parent_id, {KIND_TAG: "sweep", FOLDER_TAG: folder})
            store.client.log_text(parent_id, spec_yaml(spec), "spec.yaml")
            save_record(*build_record("sweep", spec, data, args.spec, args.overrides, profile, sweep_id),
                        store, parent_id, folder)
        status = "FAILED"
        try:
            outcome = run_sweep(spec, job, sweep_id, tracker, *cluster_capacity(),
                                driver_resources=profile.trial_driver_resources, resume=bool(resumed))
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracker.close_all(status)
    print_summary(spec, outcome, store.uri, parent_id)
    if not args.no_report:
        from raysweep.sweep_report import write_report

        try:
            page = write_report(parent_id)
            print(f"report: {page} (also attached to the parent run under report/)")
        except Exception as exc:  # a report that cannot be drawn must not fail a finished sweep
            print(f"raysweep: warning: no sweep report: {type(exc).__name__}: {exc}", file=sys.stderr)
    finished = [t for t in tracker.trials.values() if t.status == "FINISHED"]
    if args.register and finished:
        from raysweep.registry import register

        print(register(parent_id, None if args.register is True else args.register).summary())
    return EXIT_OK if finished else EXIT_FAILED


def spec_yaml(spec: Spec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def sweep_params(spec: Spec) -> dict[str, Any]:
    """The parent run's params: fixed params and the sweep's settings, flattened."""
    return {
        "params": spec.params,
        "sampler": spec.sampler.model_dump(),
        "scheduler": spec.scheduler.model_dump(),
        "budget": spec.budget.model_dump(),
        "scaling": spec.scaling.model_dump(),
        "trainer": spec.trainer,
        "seed": spec.seed,
    }


def cmd_submit(spec: Spec, data: ResolvedData, args: argparse.Namespace) -> int:
    from raysweep.cluster import use_token_auth
    from raysweep.launcher import ClusterState
    from raysweep.submit import submit

    profile = load_profile(args.cluster)
    state = ClusterState.load(profile.name)
    if state is None:
        raise UserInputError(f"{args.cluster}: cluster {profile.name!r} is not up (raysweep cluster up {args.cluster})")
    use_token_auth()
    return submit(state.dashboard, args.spec, args.overrides, Path.cwd(), args.timeout, args.cluster)


def cmd_launcher(args: argparse.Namespace) -> int:
    """Cloud profiles: validated with Ray's schema, then `ray up` / `ray down`."""
    import subprocess

    from raysweep.profile import validate_launcher_config
    from raysweep.spec import read_spec_file

    validate_launcher_config(read_spec_file(args.profile, what="profile"), args.profile)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    verbs = {"up": ["up", "-y"], "down": ["down", "-y"], "status": ["exec"]}
    command = [ray_cli, *verbs[args.action], args.profile] + (["ray status"] if args.action == "status" else [])
    if args.dry_run:
        print(" ".join(command))
        return EXIT_OK
    return EXIT_OK if subprocess.run(command).returncode == 0 else EXIT_FAILED


def cmd_cluster(args: argparse.Namespace) -> int:
    from raysweep import launcher
    from raysweep.profile import is_launcher_config
    from raysweep.spec import read_spec_file

    if is_launcher_config(read_spec_file(args.profile, what="profile")):
        return cmd_launcher(args)
    if args.dry_run:
        raise UserInputError(f"{args.profile}: --dry-run is for launcher configs (cluster/aws.yaml, cluster/gcp.yaml)")
    profile = load_profile(args.profile)
    if args.action == "up":
        state = launcher.up(profile)
        print(f"cluster {profile.name!r} is up: {len(state.pids)} node(s), address {state.address}, "
              f"dashboard and job API {state.dashboard} (token auth on; token in {launcher.token_source()})")
        print(f"  submit: raysweep submit SPEC --cluster {args.profile}")
        print(f"      or: RAY_ADDRESS={state.dashboard} ray job submit --working-dir . -- "
              "python -m raysweep tune SPEC")
        print(f"  stop:   raysweep cluster down {args.profile}")
    elif args.action == "down":
        pids = launcher.down(profile.name)
        print(f"cluster {profile.name!r} is down: stopped process groups {', '.join(map(str, pids))}")
    else:
        state = launcher.ClusterState.load(profile.name)
        if state is None or not state.alive():
            raise UserInputError(f"{args.profile}: cluster {profile.name!r} is not up")
        print(f"cluster {profile.name!r}: address {state.address}, dashboard {state.dashboard}")
        for node in launcher.status(state):
            resources = " ".join(f"{k}={v:g}" for k, v in sorted(node["resources"].items()))
            print(f"  node {node['node_id']} {node['address']} {'alive' if node['alive'] else 'dead'}: {resources}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from raysweep.runs import KIND_TAG, list_runs
    from raysweep.tracking import tracking_uri

    runs = list_runs(args.limit)
    if not runs:
        print(f"no raysweep runs in {tracking_uri()}")
    for run in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000))
        print(f"{run.info.run_id}  {run.data.tags.get(KIND_TAG, ''):<5}  {run.info.status:<8}  {started}  "
              f"{run.info.run_name}")
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    from raysweep.reproduce import reproduce

    outcome = reproduce(args.run_id, args.force, args.tolerance,
                        lambda spec, data, name, source: run_train(spec, data, args, name, source, [])[0])
    print(outcome.summary())
    return EXIT_OK if outcome.match else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    from raysweep.runs import find_sweep
    from raysweep.sweep_report import write_report

    page = write_report(find_sweep(args.sweep).info.run_id, args.out)
    print(f"report: {page} (also attached to the parent run under report/)")
    return EXIT_OK


def cmd_register(args: argparse.Namespace) -> int:
    from raysweep.registry import register

    print(register(args.run_id, args.name).summary())
    return EXIT_OK


RECORD_COMMANDS = {"runs": cmd_runs, "reproduce": cmd_reproduce, "report": cmd_report, "register": cmd_register}
COMMANDS = {"check": cmd_check, "train": cmd_train, "tune": cmd_tune, "submit": cmd_submit}


def leave_ray_working_dir(args: argparse.Namespace) -> None:
    """A Ray job's driver starts in the unpacked working dir, which Ray deletes and
    unpacks again when the last actor sharing it exits: the driver is then left in a
    deleted directory and Tune's os.getcwd() fails at the end of the sweep. Move to a
    stable directory; relative paths keep their meaning through RAYSWEEP_BASE_DIR."""
    cwd = os.getcwd()
    if "runtime_resources" not in Path(cwd).parts:
        return
    os.environ.setdefault("RAYSWEEP_BASE_DIR", cwd)
    if getattr(args, "spec", None):
        args.spec = str(Path(cwd) / args.spec)
    base = os.environ["RAYSWEEP_BASE_DIR"]
    stable = base if os.path.isdir(base) and "runtime_resources" not in Path(base).parts else None
    os.chdir(stable or tempfile.gettempdir())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    leave_ray_working_dir(args)
    try:
        if args.command == "cluster":
            return cmd_cluster(args)
        if args.command in RECORD_COMMANDS:
            return RECORD_COMMANDS[args.command](args)
        spec, data = validate(args)
        return COMMANDS[args.command](spec, data, args)
    except UserInputError as exc:
        print(f"raysweep: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except RunFailedError as exc:
        print(f"raysweep: run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
