"""`raysweep tune` on the shared Ray cluster: MLflow layout, the Optuna study, the
console and the report, in both ways a one-worker trial executes
(`scaling.worker_group`: auto -> in the trial's own process, always -> a Ray Train
worker group)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pytorch
import optuna
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.config.load import load_spec
from raysweep.registry import build_from_checkpoint
from raysweep.testing.helpers import experiment_runs
from raysweep.testing.probe import build_model
from raysweep.tracking.study import RUNG_ATTR, TUNE_TRIAL_ATTR, load_study

MAX_EPOCHS = 3


# A worker-group trial costs ~25 s here (Train starts its workers): "always" runs two
# trials, one wave on the 2-CPU cluster; TPE's first two samples (seed 3) are one
# trial of each nan_epoch value, so it still has one finished and one failed trial.
@pytest.mark.parametrize("worker_group, num_trials", [("auto", 4), ("always", 2)])
def test_sweep_leaves_parent_children_and_study(ray_cluster, mlflow_uri, write_spec, tmp_path, capsys,
                                                worker_group, num_trials):
    space = {
        "lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
        "nan_epoch": {"type": "categorical", "choices": [-1, 0]},
    }
    scheduler = {"type": "asha", "metric": "val_loss", "mode": "min", "max_epochs": MAX_EPOCHS, "grace_period": 1}
    spec = write_spec(space=space, scheduler=scheduler, budget={"num_trials": num_trials},
                      sampler={"type": "tpe", "seed": 3, "n_startup_trials": 2, "rungs": True},
                      scaling={"num_workers": 1, "worker_group": worker_group})
    assert main(["tune", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "best trial" in out and "MLflow:" in out

    client = MlflowClient(mlflow_uri)
    runs = experiment_runs(mlflow_uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == num_trials and len(runs) == num_trials + 1
    assert all(r.info.status != "RUNNING" for r in runs)
    assert parents[0].info.status == "FINISHED"
    assert "raysweep.best_trial_id" in parents[0].data.tags
    # What each trial held (1 CPU, no GPU, for about its wall time) and the sweep in all.
    held = [c.data.metrics["system/held_s"] for c in children]
    assert all(0 < h < 120 for h in held), held
    assert all(c.data.metrics["system/cpu_hours"] == pytest.approx(c.data.metrics["system/held_s"] / 3600)
               and c.data.metrics["system/gpu_hours"] == 0 for c in children)
    total = parents[0].data.metrics["system/cpu_hours"]
    assert total == pytest.approx(sum(held) / 3600, rel=1e-6) and parents[0].data.metrics["system/gpu_hours"] == 0
    assert f"({total:.3g} CPU-hours, 0 GPU-hours)" in out

    by_nan = {True: [], False: []}
    for child in children:
        by_nan[child.data.params["nan_epoch"] == "0"].append(child)
    assert by_nan[True] and by_nan[False], "seed 3 should sample both nan_epoch values"
    assert all(c.info.status == "FAILED" for c in by_nan[True])
    assert all(c.data.tags["raysweep.state"] == "FAILED" for c in by_nan[True])
    assert all("non-finite" in c.data.tags["raysweep.error"] for c in by_nan[True])
    assert all(c.info.status == "FINISHED" for c in by_nan[False])
    for child in children:
        trial_id, state = child.data.tags["raysweep.trial_id"], child.data.tags["raysweep.state"]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        if state == "FAILED":  # one line on the console, with the cause
            (line,) = [ln for ln in out.splitlines() if ln.startswith(f"[{trial_id}] FAILED: ")]
            assert "non-finite" in line
            continue
        assert steps == list(range(len(steps))) and steps
        # What the training process used, per epoch, as MLflow system metrics.
        for name in ("system/cpu_percent", "system/peak_rss_mb"):
            used = {m.step: m.value for m in client.get_metric_history(child.info.run_id, name)}
            assert sorted(used) == steps and all(v > 0 for v in used.values()), (name, used)
        # Ended well: all epochs (finished), or fewer (ASHA stopped it early).
        word = {"FINISHED": "finished", "STOPPED_EARLY": "stopped early"}[state]
        assert (len(steps) == MAX_EPOCHS) == (state == "FINISHED"), (state, steps)
        assert child.data.tags["raysweep.early_stopped"] == str(state == "STOPPED_EARLY")
        assert f"[{trial_id}] {word} after {len(steps)} epoch(s)" in out.splitlines()

    # The processes that trained (the trial's own, or the Train workers) imported none of
    # the driver's libraries and modules: the searcher, the tracker, the spec's models.
    imported = {p.name: set(p.read_text().split()) for p in (tmp_path / "probe").glob("modules-*.txt")}
    assert imported and all("raysweep.worker.entry" in names for names in imported.values()), sorted(imported)
    driver_side = {"optuna", "mlflow", "raysweep.driver.sweep", "raysweep.driver.trainer",
                   "raysweep.tracking.callbacks", "raysweep.tracking.store", "raysweep.config.spec"}
    assert {name: names & driver_side for name, names in imported.items() if names & driver_side} == {}

    (sweep_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir()]
    study = load_study(str(sweep_dir), "probe")
    states = [t.state for t in study.trials]
    assert len(states) == num_trials
    assert states.count(optuna.trial.TrialState.FAIL) == len(by_nan[True])
    # The sampler learns how each trial ended: stopped early = PRUNED, with every
    # epoch's val_loss as an intermediate value (step = epoch), not COMPLETE.
    by_tune_id = {t.user_attrs[TUNE_TRIAL_ATTR]: t for t in study.trials}
    told = {"FINISHED": optuna.trial.TrialState.COMPLETE, "STOPPED_EARLY": optuna.trial.TrialState.PRUNED,
            "FAILED": optuna.trial.TrialState.FAIL}
    for child in children:
        trial = by_tune_id[child.data.tags["raysweep.trial_id"]]
        assert trial.state == told[child.data.tags["raysweep.state"]], (child.data.tags["raysweep.state"], trial)
        if trial.state != optuna.trial.TrialState.FAIL:
            logged = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "val_loss")}
            assert trial.intermediate_values == logged
    assert Path(sweep_dir, "optuna.journal").stat().st_size > 0
    # (sampler.rungs: each trial says which epoch's values it was drawn from)
    assert all(RUNG_ATTR in t.user_attrs for t in study.trials), [t.user_attrs for t in study.trials]

    # The report, written at the end of the sweep and attached to the parent run.
    report = sweep_dir / "report"
    drawn = ["history", "timeline", "curves", "importance"] + (["parallel"] if len(by_nan[False]) >= 2 else [])
    for name in drawn:
        image = (report / f"{name}.png").read_bytes()
        assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 5000, name
    page = (report / "report.html").read_text()
    for section in ("history", "timeline", "curves", "importance", "parallel", "trials"):
        assert f'id="{section}"' in page
    # The timeline: every trial that reported on a slot of the host it ran on (Tune's
    # node_ip, tagged at its first result); one that failed before any has no host.
    assert {c.data.tags.get("raysweep.node") for c in by_nan[False]} == {"127.0.0.1"}
    assert {c.data.tags.get("raysweep.node") for c in by_nan[True]} == {None}
    assert f"{len(children)} trial(s) on " in page and "% of that time" in page
    if "parallel" not in drawn:  # one trial with results: said so in its place
        assert not (report / "parallel.png").exists() and "not drawn: fewer than two trials" in page
    words = {"FINISHED": "finished</td>", "STOPPED_EARLY": "stopped early</td>", "FAILED": "failed: "}
    for child in children:  # one row per trial: its id, then its state's word
        tags = child.data.tags
        assert f"<td>{tags['raysweep.trial_id']}</td><td>{words[tags['raysweep.state']]}" in page
    assert page.count("<td>failed: ") == len(by_nan[True])
    parent_id = parents[0].info.run_id
    attached = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/report.html", "report/history.png", "report/curves.png"} <= attached
    assert "record.json" in {a.path for a in client.list_artifacts(parent_id)}

    # The best trial's model into the registry; it loads back and predicts as the checkpoint.
    assert main(["register", parent_id, "--name", "probe-model"]) == 0
    best_run = client.get_run(parents[0].data.tags["raysweep.best_run_id"])
    # Where its checkpoint is tells how the trial ran: Tune's trial folder (in-trial),
    # or the Train run the trial drove, under the sweep's trials/ (worker group).
    checkpoint = Path(best_run.data.tags["raysweep.checkpoint"])
    runs_under = {"auto": sweep_dir / "tune", "always": sweep_dir / "trials" / best_run.data.tags["raysweep.trial_id"]}
    assert runs_under[worker_group] in checkpoint.parents, checkpoint
    version = client.get_model_version("probe-model", "1")
    assert version.tags["raysweep.run_id"] == best_run.info.run_id
    assert version.tags["raysweep.sweep_run_id"] == parent_id
    assert version.tags["raysweep.data.sha256"] == parents[0].data.tags["raysweep.data.sha256"]
    assert version.tags["raysweep.git.commit"] == parents[0].data.tags["raysweep.git.commit"]
    loaded = mlflow.pytorch.load_model("models:/probe-model/1")
    original = build_from_checkpoint("raysweep.testing.probe", {}, best_run.data.tags["raysweep.checkpoint"])
    batch = torch.linspace(-2, 2, 24).reshape(8, 3)  # (row_id, x0, x1)
    with torch.no_grad():
        assert torch.allclose(loaded(batch), original(batch), rtol=1e-6, atol=1e-7)
        torch.manual_seed(0)  # the probe trainer's initial weights (seed 0)
        assert not torch.allclose(original(batch), build_model({})(batch)), "weights are the trained ones"


def test_warm_start_seeds_the_study_and_runs_the_best_config_first(ray_cluster, mlflow_uri, write_spec, tmp_path,
                                                                   capsys):
    """`sampler.warm_start: SWEEP`: the earlier sweep's finished trials join the new
    study (marked), and with warm_start_top_k its best config runs first."""
    spec = write_spec(budget={"num_trials": 3})
    assert main(["tune", str(spec)]) == 0
    (first_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir()]
    earlier = load_study(str(first_dir), "probe")
    best = min((t for t in earlier.trials if t.value is not None), key=lambda t: t.value)

    capsys.readouterr()
    missing = ["--set", "sampler.warm_start=probe-19990101-000000"]
    assert main(["check", str(spec), *missing]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sampler.warm_start: no sweep 'probe-19990101-000000'" in err, err

    warm = ["--set", f"sampler.warm_start={first_dir.name}", "--set", "sampler.warm_start_top_k=1",
            "--set", "budget.num_trials=2", "--set", "sampler.seed=7"]
    assert main(["tune", str(spec), *warm]) == 0
    assert f"warm start: 3 finished trial(s) of sweep {first_dir.name} in the study; its best 1 run first" in \
        capsys.readouterr().out
    (second_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir() and p != first_dir]
    trials = load_study(str(second_dir), "probe").trials
    assert len(trials) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    marks = [t.user_attrs.get("raysweep.warm_start_from") for t in trials]
    assert marks[:3] == [first_dir.name] * 3 and marks[3] == f"{first_dir.name} (enqueued)" and marks[4] is None
    assert [t.params for t in trials[:3]] == [t.params for t in earlier.trials]
    assert trials[3].params == best.params, "the earlier best config ran first"
    # The report marks the enqueued config's row and counts the earlier trials added.
    page = (second_dir / "report" / "report.html").read_text()
    enqueued = trials[3].user_attrs[TUNE_TRIAL_ATTR]
    assert f"<td>{enqueued} (warm start from {first_dir.name})</td>" in page
    assert "warm start: 3 finished trial(s) of an earlier sweep in the study" in page
    assert page.count("(warm start from ") == 1


def test_a_conditional_space_sweeps_and_warm_starts(ray_cluster, mlflow_uri, digits_spec, tmp_path, capsys):
    """search_spaces/digits_mlp_conditional.yaml: momentum only for sgd (`when:`), one
    width per layer from the space function; each trial's model has the widths it drew
    (read from its checkpoint), and a warm start takes the conditional trials in."""
    from raysweep.worker.checkpoint import load_state

    spec = digits_spec("digits_mlp_conditional.yaml", scheduler={"type": "fifo", "metric": "val_loss", "mode": "min",
                                                                 "max_epochs": 1},
                       budget={"num_trials": 4}, sampler={"type": "random", "seed": 0})
    assert main(["tune", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "momentum" in out and "hidden_0" in out  # (the table's columns, the function's params too)
    children = [r for r in experiment_runs(mlflow_uri, "digits-mlp-conditional")
                if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.params["optimizer"] for r in children} == {"adam", "sgd"}, "seed 0 draws both optimizers"
    for run in children:
        params = run.data.params
        assert ("momentum" in params) == (params["optimizer"] == "sgd"), params
        layers = int(params["num_layers"])
        assert sorted(k for k in params if k.startswith("hidden_")) == [f"hidden_{i}" for i in range(layers)]
        weights = load_state(run.data.tags["raysweep.checkpoint"])["model"]
        widths = [w.shape[0] for k, w in weights.items() if k.endswith(".weight")][:-1]
        assert widths == [int(params[f"hidden_{i}"]) for i in range(layers)], (widths, params)

    (first_dir,) = [p for p in (tmp_path / "results" / "digits-mlp-conditional").iterdir() if p.is_dir()]
    warm = ["--set", f"sampler.warm_start={first_dir.name}", "--set", "sampler.warm_start_top_k=1",
            "--set", "budget.num_trials=1", "--set", "sampler.type=tpe"]
    assert main(["tune", str(spec), *warm]) == 0
    assert f"warm start: 4 finished trial(s) of sweep {first_dir.name}" in capsys.readouterr().out


def test_a_two_objective_sweep_early_stops_by_pareto_rank_and_registers_a_front_member(
        ray_cluster, mlflow_uri, digits_spec, tmp_path, capsys):
    """search_spaces/digits_mlp_pareto.yaml (val_loss and params_count, ASHA on, a
    val_accuracy constraint): the front on the console, the parent run and the report
    is the non-dominated set of the feasible trials' last epochs; ASHA stopped some
    trials; the study holds both objectives and the constraint; `--register --pick
    params_count` registers the front's smallest model."""
    from raysweep.tracking import tags as tag
    from raysweep.tracking.pareto import pareto_front

    spec = digits_spec("digits_mlp_pareto.yaml", budget={"num_trials": 6},
                       sampler={"type": "tpe", "seed": 0, "n_startup_trials": 3},
                       scheduler={"type": "asha", "metric": ["val_loss", "params_count"], "mode": ["min", "min"],
                                  "max_epochs": 4, "grace_period": 1, "reduction_factor": 2})
    assert main(["tune", str(spec), "--register", "--pick", "params_count"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (val_loss min, params_count min; each trial's last epoch)" in out
    runs = experiment_runs(mlflow_uri, "digits-mlp-pareto")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 6
    assert any(r.data.tags[tag.STATE] == "STOPPED_EARLY" for r in children), "ASHA stopped none"
    feasible = [r for r in children if r.data.tags.get(tag.FEASIBLE) == "True"]
    assert all(r.data.metrics["val_accuracy"] >= 0.9 for r in feasible)
    assert all(r.data.metrics["val_accuracy"] < 0.9 for r in children if r.data.tags.get(tag.FEASIBLE) == "False")
    expected = {feasible[i].data.tags[tag.TRIAL_ID] for i in pareto_front(
        [(r.data.metrics["val_loss"], r.data.metrics["params_count"]) for r in feasible])}
    front = json.loads(parent.data.tags[tag.PARETO_FRONT])
    assert {m["trial_id"] for m in front} == expected and expected
    for member in front:
        assert f"{member['trial_id']}  " in out  # (a row of the front's table)

    smallest = min(front, key=lambda m: m["params_count"])
    (version,) = MlflowClient(mlflow_uri).search_model_versions("name='digits-mlp-pareto'")
    assert version.run_id == smallest["run_id"]
    assert parent.data.tags[tag.BEST_RUN_ID] == min(front, key=lambda m: m["val_loss"])["run_id"]

    sweep_dir = next(p for p in (tmp_path / "results" / "digits-mlp-pareto").iterdir() if p.is_dir())
    page = (sweep_dir / "report" / "report.html").read_text()
    assert (sweep_dir / "report" / "pareto.png").stat().st_size > 0
    assert f"{len(front)} trial(s) on the front of val_loss min, params_count min" in page
    study = load_study(str(sweep_dir), "digits-mlp-pareto")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.directions) == 2 and done and all(len(t.values) == 2 for t in done)
    assert all(set(t.constraints) == {"val_accuracy >= 0.9"} for t in study.trials if t.state.is_finished())


def test_a_constraint_on_a_metric_the_trainer_never_reports_fails_the_trial_naming_it(
        ray_cluster, mlflow_uri, write_spec, capsys):
    spec = write_spec(budget={"num_trials": 1}, constraints=["latency_ms <= 5"])
    main(["tune", str(spec)])
    (child,) = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status == "FAILED"
    assert "constraint 'latency_ms <= 5' names metric 'latency_ms', which the trainer does not report" in \
        child.data.tags["raysweep.error"]
    assert "latency_ms" in capsys.readouterr().out


def test_a_time_budget_stops_the_sweep_and_resume_continues_it(ray_cluster, mlflow_uri, write_spec, tmp_path,
                                                                capsys):
    """budget.max_hours: the sweep stops when it is spent (here its first trial sits in
    its second epoch: 30 s leave its start-up and first epoch room on a loaded machine,
    where 12 s did not), says so, records why on the parent run; `--resume` with a new
    budget continues the stopped trial from its checkpoint (no epoch logged twice) and
    runs the rest, with Tune's own stored state deleted before the resume."""
    from raysweep.testing.helpers import probe_params
    from raysweep.tracking import tags as tag

    spec = write_spec(budget={"num_trials": 2, "max_concurrent_trials": 1, "max_hours": 30 / 3600},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": MAX_EPOCHS},
                      params=probe_params(tmp_path, pause_epoch=1, pause_s=120))
    assert main(["tune", str(spec)]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if " stopped: budget.max_hours " in ln]
    sweep_id = line.split()[1]
    assert f"--resume {sweep_id}` continues it" in line
    (parent,) = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags[tag.STOPPED_BY].startswith("budget.max_hours") and parent.info.status == "KILLED"
    assert (tmp_path / "probe" / "paused").exists(), "the budget ran out before the first trial's second epoch"
    # A resume reads the Optuna journal and MLflow, not Tune's stored experiment state.
    tune_dir = tmp_path / "results" / "probe" / sweep_id / "tune"
    tune_state = [p for p in tune_dir.iterdir() if p.is_file()]
    assert any(p.name.startswith("experiment_state") for p in tune_state), sorted(p.name for p in tune_state)
    for path in tune_state:
        path.unlink()

    assert main(["tune", str(spec), "--resume", sweep_id, "--set", "budget.max_hours=1"]) == 0
    assert " stopped: " not in capsys.readouterr().out
    client = MlflowClient(mlflow_uri)
    children = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children), \
        [(c.info.status, c.data.tags.get(tag.ERROR)) for c in children]
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == list(range(MAX_EPOCHS)), steps  # (each epoch once: the stopped one resumed, not rerun)
    # The study learned both trials' ends (the stopped one was not marked FAIL as lost).
    (sweep_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir()]
    states = [t.state for t in load_study(str(sweep_dir), "probe").trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2, states


def test_a_time_budget_alone_samples_until_it_is_spent(ray_cluster, mlflow_uri, write_spec, capsys):
    """budget.max_hours with no num_trials: a resource budget, new configurations one
    after another until the hours are spent, then the sweep stops (resumably)."""
    spec = write_spec(budget={"max_concurrent_trials": 1, "max_hours": 25 / 3600},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 1})
    assert main(["tune", str(spec)]) == 0
    out = capsys.readouterr().out
    assert any(" stopped: budget.max_hours " in line for line in out.splitlines()), out[-2000:]
    children = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) >= 3 and len(children) - len(finished) <= 1, [c.info.status for c in children]


def test_a_trial_that_cannot_be_placed_stops_the_sweep_and_resume_continues_it(ray_cluster, mlflow_uri,
                                                                               write_spec, capsys):
    """scaling.pending_timeout_s: with every CPU of the cluster held (a placement group
    standing in for capacity that is gone), the sweep's trial waits that long, then the
    sweep stops saying what the trial asks for and what the cluster has free; once the
    CPUs are back, `--resume` runs it."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from raysweep.tracking import tags as tag

    spec = write_spec(budget={"num_trials": 1}, scaling={"num_workers": 1, "pending_timeout_s": 10})
    cpus = ray.cluster_resources()["CPU"]
    held = placement_group([{"CPU": cpus}])
    ray.get(held.ready(), timeout=60)
    assert ray.available_resources().get("CPU", 0) == 0
    try:
        assert main(["tune", str(spec)]) == 1  # (no trial ran)
    finally:
        remove_placement_group(held)
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if " stopped: scaling.pending_timeout_s (10 s): trial " in ln]
    assert f"could not be placed: it asks for {{CPU: 1}}; the cluster has CPU 0 free of {cpus:g};" in line, line
    sweep_id = line.split()[1]
    (parent,) = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags[tag.STOPPED_BY].startswith("scaling.pending_timeout_s")
    assert main(["tune", str(spec), "--resume", sweep_id]) == 0
    children = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]
    assert [c.info.status for c in children] == ["FINISHED"]


def test_a_hyperband_sweep_stops_trials_only_at_their_brackets_rungs(ray_cluster, mlflow_uri, write_spec):
    """scheduler.type: hyperband on Ray: 6 trials, max 8 epochs, brackets with first rungs
    at 1, 2 and 4 epochs: every trial ends at a rung of its bracket or at max_epochs."""
    from raysweep.driver.sweep import make_scheduler

    scheduler = {"type": "hyperband", "metric": "val_loss", "mode": "min", "max_epochs": 8, "grace_period": 1,
                 "brackets": 3}
    spec = write_spec(scheduler=scheduler, budget={"num_trials": 6}, seed=5)
    assert main(["tune", str(spec)]) == 0
    children = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 6 and all(c.info.status == "FINISHED" for c in children)
    hb = make_scheduler(load_spec(spec).scheduler, 5)  # (the brackets the sweep drew: same seed, same order)
    client = MlflowClient(mlflow_uri)
    seen = []
    for child in sorted(children, key=lambda c: c.info.start_time):
        epochs = len(client.get_metric_history(child.info.run_id, "val_loss"))
        bracket = hb.bracket_of(child.data.tags["raysweep.trial_id"])
        assert epochs in [*hb.bracket_milestones(bracket), 8], (child.data.tags["raysweep.trial_id"], bracket, epochs)
        seen.append((bracket, epochs))
    assert len({b for b, _ in seen}) > 1 and any(e < 8 for _, e in seen), seen  # (seed 5: brackets 0 and 1, stops)


def test_a_failure_budget_stops_the_sweep(ray_cluster, mlflow_uri, write_spec, tmp_path, capsys):
    """budget.max_failed_trials: a sweep whose trials all fail stops once that many have,
    instead of running every trial of num_trials."""
    from raysweep.testing.helpers import probe_params
    from raysweep.tracking import tags as tag

    spec = write_spec(budget={"num_trials": 6, "max_concurrent_trials": 1, "max_failed_trials": 2},
                      params=probe_params(tmp_path, fault="raise"))
    assert main(["tune", str(spec)]) == 1  # (no trial ended well)
    assert "stopped: budget.max_failed_trials (2) reached" in capsys.readouterr().out
    runs = experiment_runs(mlflow_uri)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags[tag.STOPPED_BY] == "budget.max_failed_trials (2) reached"
    failed = [r for r in runs if r.data.tags.get("raysweep.state") == "FAILED"]
    assert len(failed) == 2 and len(runs) - 1 < 6, [r.data.tags.get("raysweep.state") for r in runs]


def test_an_epoch_budget_samples_until_spent_and_resume_counts_what_was_spent(ray_cluster, mlflow_uri, write_spec,
                                                                              tmp_path, capsys):
    """budget.total_epochs without num_trials: new trials until the sweep's epochs are
    spent; the trial still running then (paused in its second epoch) is stopped,
    resumable; `--resume` with a larger budget continues it, counts the 3 epochs spent
    before, runs one more trial and ends as done when the budget is spent with nothing
    running."""
    from raysweep.testing.helpers import probe_params
    from raysweep.tracking import tags as tag

    spec = write_spec(budget={"total_epochs": 3, "max_concurrent_trials": 1},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 2},
                      params=probe_params(tmp_path, pause_epoch=1, pause_after_done=1, pause_s=120))
    assert main(["tune", str(spec)]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if " stopped: budget.total_epochs (3) spent" in ln]
    sweep_id = line.split()[1]
    (parent,) = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags[tag.STOPPED_BY] == "budget.total_epochs (3) spent"
    assert len(experiment_runs(mlflow_uri)) == 3  # (two trials: one done, one cut in its second epoch)

    assert main(["tune", str(spec), "--resume", sweep_id, "--set", "budget.total_epochs=6"]) == 0
    out = capsys.readouterr().out
    assert "journal: 1 trial(s) finished, 1 to continue" in out and " stopped: " not in out, out[-2000:]
    client = MlflowClient(mlflow_uri)
    children = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children), \
        [(c.info.status, c.data.tags.get(tag.ERROR)) for c in children]
    steps = sorted([m.step for m in client.get_metric_history(c.info.run_id, "val_loss")] for c in children)
    assert steps == [[0, 1]] * 3, steps  # (6 epochs in all, the cut trial's second one trained once)
    (sweep_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir()]
    states = [t.state for t in load_study(str(sweep_dir), "probe").trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3, states
