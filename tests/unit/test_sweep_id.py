"""Sweep ids: unique per start, claimed before use, in start-time order."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from raysweep.run import new_sweep_id


def test_same_second_sweeps_get_different_claimed_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter(["00000000", "00000000", "0000abcd"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(draws))
    monkeypatch.setattr("time.strftime", lambda fmt, *a: "20260101-000000")
    first = new_sweep_id(str(tmp_path), "spec")
    second = new_sweep_id(str(tmp_path), "spec")  # its first draw is taken: drawn again
    assert (first, second) == ("spec-20260101-000000-00000000", "spec-20260101-000000-0000abcd")
    assert (tmp_path / first).is_dir() and (tmp_path / second).is_dir()


def test_ids_carry_time_then_randomness(tmp_path: Path) -> None:
    sweep_id = new_sweep_id(str(tmp_path / "not-yet"), "digits-mlp")
    assert re.fullmatch(r"digits-mlp-\d{8}-\d{6}-[0-9a-f]{8}", sweep_id)
