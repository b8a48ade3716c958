"""The suite runs with a HOME of its own (tests/conftest.py `isolated_home`): the
cluster token, cluster state and Ray's own ~/.ray files of the tests never land in
the user's home, in this process or in the processes it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from raysweep.cluster.auth import token_path
from raysweep.cluster.local import state_dir


def test_home_token_and_cluster_state_are_the_suites_own(isolated_home: Path) -> None:
    assert Path.home() == isolated_home and Path("~").expanduser() == isolated_home
    assert token_path() == isolated_home / ".ray" / "auth_token"
    assert state_dir() == isolated_home / ".raysweep"
    assert not {"RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ)


def test_started_processes_inherit_it(isolated_home: Path) -> None:
    child = subprocess.run([sys.executable, "-c", "import pathlib; print(pathlib.Path.home())"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(isolated_home)
