"""scripts/quickstart.sh, one of the README's two commands (tests/unit/test_readme.py
maps it here): it starts a Ray cluster of its own, in its own process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from raysweep.testing.helpers import experiment_runs

REPO = Path(__file__).resolve().parents[2]
# Would send the sweep to the user's own cluster or tracking server.
USER_SETTINGS = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI", "RAYSWEEP_BASE_DIR")


@pytest.fixture
def own_ray_tmpdir():
    """A Ray temp dir of its own for the quickstart's cluster (see test_faults.own_ray_tmpdir)."""
    path = tempfile.mkdtemp(prefix="rs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_quickstart_runs_its_sweep(tmp_path, own_ray_tmpdir) -> None:
    """scripts/quickstart.sh as shipped, but for its install step (the test's venv is
    the one it would make) and a smaller budget through its arguments: it writes the
    digits, checks the spec and sweeps on a cluster it starts, into ./mlflow.db and
    ./results of the project it runs in."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("search_spaces", "trainers"):
        (project / name).symlink_to(REPO / name)
    (project / ".venv").symlink_to(Path(sys.prefix))
    scripts = project / "scripts"
    scripts.mkdir()
    shutil.copy(REPO / "scripts" / "quickstart.sh", scripts / "quickstart.sh")
    (scripts / "prepare_data.py").symlink_to(REPO / "scripts" / "prepare_data.py")
    (scripts / "setup_env.sh").write_text("#!/usr/bin/env bash\necho 'setup_env: the test venv'\n")
    (scripts / "setup_env.sh").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    env["RAY_TMPDIR"] = own_ray_tmpdir
    done = subprocess.run(["bash", "scripts/quickstart.sh", "--set", "budget.num_trials=2",
                           "--set", "scheduler.max_epochs=2"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "setup_env: the test venv" in out
    assert "wrote 1437 train and 360 validation rows under data/digits" in out
    assert "search_spaces/digits_mlp.yaml: ok: trainer trainers.digits_mlp" in out
    assert "report: " in out
    (sweep,) = [p for p in (project / "results" / "digits-mlp").iterdir() if p.is_dir()]
    assert (sweep / "optuna.journal").is_file() and (sweep / "report" / "report.html").is_file()
    runs = experiment_runs(f"sqlite:///{project / 'mlflow.db'}", experiment="digits-mlp")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)  # the sweep and its 2 trials
