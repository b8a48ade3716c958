"""The README's commands that run here for real (their table is COMMANDS in
tests/unit/test_readme.py, which checks that every fenced README command has an
entry), and three no other test runs: `runs`, `report SWEEP`, `train --fingerprint
full` (the quickstart, which starts a cluster of its own: tests/cluster/test_readme_quickstart.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raysweep import __version__
from raysweep.cli import main
from raysweep.testing.helpers import experiment_runs

REPO = Path(__file__).resolve().parents[2]
# Would send a command to the user's own cluster or tracking server.
USER_SETTINGS = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI", "RAYSWEEP_BASE_DIR")


def _readme_table():
    """tests/unit/test_readme.py, loaded by path (the tiers are separate folders)."""
    spec = importlib.util.spec_from_file_location("readme_table", REPO / "tests" / "unit" / "test_readme.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


TABLE = _readme_table()
COMMANDS = {command: how for command, how in TABLE.COMMANDS.items() if isinstance(how, TABLE.RunHere)}


def _link_repo(project: Path) -> None:
    """The repo's folders a README command reads, linked into `project`; cluster/aws.yaml
    as its user configures it (a security group id for the placeholder)."""
    for name in ("scripts", "search_spaces", "trainers"):
        (project / name).symlink_to(REPO / name)
    (project / "cluster").mkdir()
    for profile in (REPO / "cluster").iterdir():
        (project / "cluster" / profile.name).symlink_to(profile)
    aws = project / "cluster" / "aws.yaml"
    aws.unlink()
    aws.write_text((REPO / "cluster" / "aws.yaml").read_text().replace("sg-YOUR-GROUP-ID", TABLE.AWS_GROUP))
    (project / ".venv").symlink_to(Path(sys.prefix))


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    (root / "home").mkdir(exist_ok=True)
    env.update(HOME=str(root / "home"), RAYSWEEP_STATE_DIR=str(root / "state"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A temporary project folder with the quickstart's data (`data/digits`)."""
    root = tmp_path_factory.mktemp("readme")
    project = root / "project"
    project.mkdir()
    _link_repo(project)
    env = _env(root)
    done = subprocess.run(["bash", "-c", "python scripts/prepare_data.py --out data/digits"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return project, env


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_readme_command_runs(project, command: str) -> None:
    how = COMMANDS[command]
    folder, env = project
    if command.startswith("source ") and not (Path(sys.prefix) / "bin" / "activate").is_file():
        pytest.skip("the tests run outside a virtual environment")
    done = subprocess.run(["bash", "-c", how.command or command], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == how.code, f"{how.command or command}: exit {done.returncode}\n{done.stderr[-3000:]}"
    assert how.expect in done.stdout, f"{how.command or command}: {how.expect!r} not in\n{done.stdout[-3000:]}"
    if command == "raysweep --version":
        assert done.stdout.strip() == f"raysweep {__version__}"


def test_the_first_sweeps_commands(ray_cluster, mlflow_uri, digits_spec, tmp_path, capsys) -> None:
    """`raysweep train SPEC --fingerprint full`, `raysweep runs`, `raysweep report SWEEP`
    (by the sweep's name) on the digits spec."""
    spec = digits_spec("digits_mlp.yaml", budget={"num_trials": 2},
                       scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 1})
    assert main(["train", str(spec), "--fingerprint", "full"]) == 0
    record = json.loads((tmp_path / "results" / "digits-mlp" / "digits-mlp-train" / "record.json").read_text())
    files = record["data"]["files"]["train"]
    assert record["data"]["mode"] == "full" and files and all(len(f["sha256"]) == 64 for f in files)

    assert main(["tune", str(spec), "--no-report"]) == 0
    runs = experiment_runs(mlflow_uri, experiment="digits-mlp")
    (sweep,) = [r for r in runs if r.data.tags.get("raysweep.kind") == "sweep"]
    assert not (tmp_path / "results" / "digits-mlp" / sweep.info.run_name / "report").exists()
    capsys.readouterr()

    assert main(["runs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 4, listed  # the train run, the sweep, its 2 trials
    for run in runs:
        assert any(line.startswith(run.info.run_id) and line.endswith(run.info.run_name) for line in listed), listed
    assert sum(" trial " in line for line in listed) == 2

    assert main(["report", sweep.info.run_name]) == 0
    out = capsys.readouterr().out
    page = tmp_path / "results" / "digits-mlp" / sweep.info.run_name / "report" / "report.html"
    assert f"report: {page}" in out and page.is_file()
    assert yaml.safe_load(spec.read_text())["name"] == "digits-mlp"
