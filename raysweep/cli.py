"""`raysweep check|train|tune SPEC`: parse, call the Python API, print, exit.

Exit codes: 0 success, 2 invalid input (spec, data, config), 1 a run that failed.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from typing import Any

from raysweep import __version__
from raysweep.config.load import leave_ray_working_dir, resolve_path
from raysweep.errors import STORAGE_FULL, RunFailedError, UserInputError
from raysweep.prepare import prepare

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysweep", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"raysweep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, spec: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if spec:
            sub.add_argument("spec", help="experiment spec (YAML), e.g. search_spaces/digits_mlp.yaml")
            sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                             help="override a spec field (repeatable)")
        return sub

    check = add("check", "Validate the spec and the data's schema; starts no Ray.")
    check.add_argument("--explain", action="store_true", help="also print every spec field with its help")
    train = add("train", "One data-parallel training run at the spec's fixed params.")
    train.add_argument("--name", help="run name; re-using it resumes from the latest checkpoint "
                                      "(default: SPEC_NAME-train)")
    train.add_argument("--force", action="store_true",
                       help="resume the named run even though the spec or data changed since it started")
    tune = add("tune", "An Optuna sweep of data-parallel trials on Ray Tune.")
    tune.add_argument("--resume", nargs="?", const=True, metavar="SWEEP_ID",
                      help="continue an interrupted sweep (default: the newest of this spec): finished trials "
                           "are kept, unfinished ones continue from their checkpoints")
    tune.add_argument("--no-report", action="store_true", help="do not write the sweep report at the end")
    tune.add_argument("--register", nargs="?", const=True, metavar="MODEL_NAME",
                      help="register the best trial's model in the MLflow Model Registry (default name: the spec's)")
    tune.add_argument("--pick", metavar="METRIC",
                      help="with --register on a multi-objective sweep: the Pareto front's member with the best "
                           "METRIC (an objective; default: the first objective)")
    runs = add("runs", "List recorded raysweep runs (train runs, sweeps, trials).", spec=False)
    runs.add_argument("--limit", type=int, default=30)
    reproduce = add("reproduce", "Re-run a recorded training run (or sweep trial) from its record and compare "
                                 "metrics.", spec=False)
    reproduce.add_argument("run_id", help="MLflow run id of a train run or a sweep trial (see `raysweep runs`)")
    reproduce.add_argument("--force", action="store_true", help="run even if the data or versions changed")
    reproduce.add_argument("--tolerance", type=float, default=1e-6,
                           help="relative tolerance per metric value (default: %(default)g)")
    for sub in (check, train, tune, reproduce):
        sub.add_argument("--cluster", metavar="PROFILE", help="cluster profile, e.g. cluster/local.yaml "
                         "(default: a local cluster started in-process)")
    for sub in (train, tune, reproduce):
        sub.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else the profile's)")
    for sub in (train, tune):
        sub.add_argument("--fingerprint", choices=["footer", "full"], default="footer", help="how the record "
                         "identifies the data: size, mtime or ETag, footer hash (default); or a sha256 of every byte")
    report = add("report", "Write a sweep's HTML report and PNGs; attach them to its parent run.", spec=False)
    report.add_argument("sweep", help="sweep name, its MLflow parent run id, or its run folder")
    report.add_argument("--out", help="folder for the report (default: the sweep's run folder /report)")
    register = add("register", "Register a run's model in the MLflow Model Registry.", spec=False)
    register.add_argument("run_id", help="MLflow run id of a train run, a trial, or a sweep (its best trial)")
    register.add_argument("--name", help="registered model name (default: the spec's name)")
    register.add_argument("--pick", metavar="METRIC",
                          help="a multi-objective sweep: its Pareto front's member with the best METRIC")
    submit = add("submit", "Submit `raysweep tune SPEC` as a Ray job to a cluster and follow its logs.")
    submit.add_argument("--cluster", metavar="PROFILE", default="cluster/local.yaml",
                        help="profile of a cluster started with `raysweep cluster up` (default: %(default)s)")
    submit.add_argument("--timeout", type=float, help="stop the job after this many seconds")
    submit.add_argument("--resume", nargs="?", const=True, metavar="SWEEP_ID",
                        help="the job continues an interrupted sweep (`tune --resume`), e.g. after its head was lost: "
                             "the sweep's state is read from its storage_path")
    cluster = add("cluster", "Start, stop or inspect a Ray cluster from a profile.", spec=False)
    cluster.add_argument("action", choices=["up", "down", "status"])
    cluster.add_argument("profile", nargs="?", default="cluster/local.yaml",
                         help="cluster profile (default: %(default)s); a Ray cluster launcher "
                              "config (cluster/aws.yaml, cluster/gcp.yaml) is handed over to `ray up`/`ray down`")
    cluster.add_argument("--dry-run", action="store_true",
                         help="with a launcher config: print the `ray` command instead of running it")
    return parser


def _batch_form(data: Any) -> str:
    layout = data.layout
    if layout.named:
        return "named batches of " + ", ".join(f"{c.name} ({c.kind.value})" for c in layout.columns)
    if layout.matrix:
        return f"{len(layout.features)} features"
    return f"tensor feature {layout.features[0]} {list(layout.columns[0].shape)} {layout.columns[0].dtype}"


def cmd_check(args: argparse.Namespace) -> int:
    run = prepare(args.spec, args.overrides, cluster=args.cluster, will_connect=False)
    data = run.data
    print(f"{args.spec}: ok: trainer {run.spec.trainer}, {_batch_form(data)}, "
          f"{data.num_train_rows} train rows in {len(data.train_files)} file(s), "
          f"{data.num_validation_rows} validation rows, {len(run.spec.space)} searched params")
    if args.explain:
        from raysweep.config.explain import explain  # (lazy: only for --explain)

        print(explain())
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    result = api().train(args.spec, args.overrides, cluster=args.cluster, address=args.address, name=args.name,
                         fingerprint=args.fingerprint, force=args.force)
    print(f"run {result.run_name}: " + " ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
    print(f"checkpoint: {result.checkpoint}")
    print(f"MLflow: {result.tracking_uri} run {result.run_id}")
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from raysweep.tracking.console import print_summary  # (lazy, as each engine import here: `check` loads no MLflow)

    result = api().tune(args.spec, args.overrides, cluster=args.cluster, address=args.address, resume=args.resume,
                        report=not args.no_report, register=args.register, fingerprint=args.fingerprint,
                        pick=args.pick)
    print_summary(result)
    for warning in result.warnings:
        print(f"raysweep: warning: {warning}", file=sys.stderr)
    if result.report:
        print(f"report: {result.report} (also attached to the parent run under report/)")
    if result.registered:
        print(result.registered.summary())
    if result.stopped_by:
        print(f"sweep {result.sweep_id} stopped: {result.stopped_by}; its unfinished trials keep their latest "
              f"checkpoints: `raysweep tune {args.spec} --resume {result.sweep_id}` continues it")
        if result.stopped_by.startswith(("budget.max_hours", "budget.max_gpu_hours")):  # (a clean stop)
            return EXIT_OK
        if result.stopped_by.startswith(STORAGE_FULL):  # (not finished: a trial could not write)
            return EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_submit(args: argparse.Namespace) -> int:
    from raysweep.cluster.submit import submit_to_cluster  # (lazy: Ray's job client)

    prepare(args.spec, args.overrides, cluster=args.cluster, will_connect=False)
    return submit_to_cluster(args.spec, args.overrides, args.cluster, args.timeout, resume=args.resume)


def cmd_cluster(args: argparse.Namespace) -> int:
    from raysweep.cluster import cloud, local  # (lazy: Ray's launcher)

    if cloud.is_cloud_profile(args.profile):
        command = cloud.launcher_command(args.action, args.profile)
        if args.dry_run:
            print(" ".join(command))
            return EXIT_OK
        if args.action == "up":
            cloud.forget_set_up_machines(args.profile)
        launched = cloud.launch(command)
        if args.action == "down" and (failed := cloud.stop_workers(args.profile)):
            print(f"raysweep: could not stop Ray on {', '.join(failed)} over SSH", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK if launched else EXIT_FAILED
    if args.dry_run:
        raise UserInputError(f"{args.profile}: --dry-run is for launcher configs (cluster/aws.yaml, cluster/gcp.yaml)")
    print(getattr(local, f"cluster_{args.action}")(args.profile))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from raysweep.tracking.console import runs_lines
    from raysweep.tracking.lookup import list_runs  # (lazy: MLflow)
    from raysweep.tracking.store import tracking_uri

    print("\n".join(runs_lines(list_runs(args.limit))) or f"no raysweep runs in {tracking_uri()}")
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    from raysweep.reproduce import reproduce  # (lazy: Ray, MLflow)

    outcome = reproduce(args.run_id, args.force, args.tolerance, cluster=args.cluster, address=args.address)
    print(outcome.summary())
    return EXIT_OK if outcome.match else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    from raysweep.tracking.html_report import write_report  # (lazy: MLflow, matplotlib)
    from raysweep.tracking.lookup import find_sweep

    page = write_report(find_sweep(args.sweep).info.run_id, args.out)
    print(f"report: {page} (also attached to the parent run under report/)")
    return EXIT_OK


def cmd_register(args: argparse.Namespace) -> int:
    from raysweep.registry import register  # (lazy: MLflow, torch)

    print(register(args.run_id, args.name, args.pick).summary())
    return EXIT_OK


def api():  # noqa: ANN201
    import raysweep.run  # (lazy: Ray and MLflow stay out of `check`)
    return raysweep.run


COMMANDS = {"check": cmd_check, "train": cmd_train, "tune": cmd_tune, "submit": cmd_submit, "cluster": cmd_cluster,
            "runs": cmd_runs, "reproduce": cmd_reproduce, "report": cmd_report, "register": cmd_register}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.spec = leave_ray_working_dir(getattr(args, "spec", None))
    if getattr(args, "cluster", None) and args.command != "submit":  # (in a job: a path in its working dir)
        args.cluster = resolve_path(args.cluster)
    try:
        return COMMANDS[args.command](args)
    except UserInputError as exc:
        print(f"raysweep: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except RunFailedError as exc:
        print(f"raysweep: run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"raysweep: run failed: no space left on device ({exc.filename or exc}); free space and run the same "
              "command again (a sweep: with --resume)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
