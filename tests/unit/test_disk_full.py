"""A sweep whose trial finds the disk full stops at once (resumable), rather than
failing every later trial the same way; a driver-side ENOSPC is one line, exit 1."""

from __future__ import annotations

import errno
import types
import warnings

import pytest

from raysweep import cli
from raysweep.driver.sweep import SweepBudget, is_disk_full
from raysweep.errors import STORAGE_FULL


def _trial(tmp_path, text: str) -> types.SimpleNamespace:
    error = tmp_path / "error.txt"
    error.write_text(text)
    return types.SimpleNamespace(trial_id="t1", pickled_error_file=None, error_file=str(error))


def test_a_trial_that_found_no_space_stops_the_sweep(tmp_path) -> None:
    budget = SweepBudget(max_hours=None, max_failed=None, failed=lambda: 0)
    budget.on_trial_error(0, [], _trial(tmp_path, "Traceback (most recent call last):\n  ...\nValueError: bad lr\n"))
    assert budget.reason is None
    full = "Traceback (most recent call last):\n  ...\nOSError: [Errno 28] No space left on device: '/x/state.pt'\n"
    with warnings.catch_warnings(record=True):  # (no Tune handler in this process: it warns, and records why)
        warnings.simplefilter("always")
        budget.on_trial_error(0, [], _trial(tmp_path, full))
    assert budget.reason is not None and budget.reason.startswith(f"{STORAGE_FULL}: trial t1 could not write")
    assert "No space left on device" in budget.reason


@pytest.mark.parametrize("cause, full", [
    ("OSError: [Errno 28] No space left on device", True),
    ("OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device", True),
    ("OSError: [Errno 13] Permission denied", False),
])
def test_disk_full_is_told_from_other_write_errors(cause: str, full: bool) -> None:
    assert is_disk_full(cause) is full


def test_a_driver_side_enospc_is_one_line_and_exit_1(monkeypatch, capsys) -> None:
    def full(args):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/optuna.journal")

    monkeypatch.setitem(cli.COMMANDS, "check", full)
    assert cli.main(["check", "search_spaces/digits_mlp.yaml"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["raysweep: run failed: no space left on device (/runs/optuna.journal); free space and run the same "
                   "command again (a sweep: with --resume)"]

    def denied(args):  # type: ignore[no-untyped-def]
        raise OSError(errno.EACCES, "Permission denied", "/runs")

    monkeypatch.setitem(cli.COMMANDS, "check", denied)
    with pytest.raises(PermissionError):
        cli.main(["check", "search_spaces/digits_mlp.yaml"])
