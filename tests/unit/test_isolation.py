"""The suite runs with a HOME of its own (tests/conftest.py `isolated_home`): the
cluster token, cluster state and Ray's own ~/.ray files of the tests never land in
the user's home, in this process or in the processes it starts (those:
tests/integration/test_fresh_processes.py)."""

from __future__ import annotations

import os
from pathlib import Path

from raysweep.cluster.auth import token_path
from raysweep.cluster.local import state_dir


def test_home_token_and_cluster_state_are_the_suites_own(isolated_home: Path) -> None:
    assert Path.home() == isolated_home and Path("~").expanduser() == isolated_home
    assert token_path() == isolated_home / ".ray" / "auth_token"
    assert state_dir() == isolated_home / ".raysweep"
    assert not {"RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ)


def test_a_cluster_token_is_its_own_and_a_user_token_wins(monkeypatch) -> None:
    from raysweep.cluster.auth import ensure_cluster_token, token_env, token_file

    first, second = ensure_cluster_token("one"), ensure_cluster_token("two")
    assert first == token_file("one") and first.read_text() != second.read_text()
    assert ensure_cluster_token("one").read_text() == first.read_text(), "a second `up` made a new token"
    assert oct(first.stat().st_mode & 0o777) == "0o600" and oct(first.parent.stat().st_mode & 0o777) == "0o700"
    assert token_env(first) == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(first)}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-users-own")
    assert token_env(first) == {"RAY_AUTH_MODE": "token"}


def test_a_private_place_is_private_and_goes_away(monkeypatch) -> None:
    from raysweep.cluster.isolation import PrivatePlace

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    place = PrivatePlace()
    place.enter()
    assert os.environ["RAY_TMPDIR"] == str(place.root) and os.environ["RAY_AUTH_TOKEN_PATH"] == str(place.token)
    assert oct(place.root.stat().st_mode & 0o777) == "0o700" and oct(place.token.stat().st_mode & 0o777) == "0o600"
    assert len(str(place.root)) < 40, "Ray's Unix socket paths live under it"
    ports = {os.environ["AUTOSCALER_METRIC_PORT"], os.environ["DASHBOARD_METRIC_PORT"]}
    assert "44217" not in ports and "44227" not in ports
    place.leave()
    assert "RAY_TMPDIR" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ and not place.root.exists()
