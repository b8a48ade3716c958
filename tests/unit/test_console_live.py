"""The live progress line: on a terminal it stays under the event lines and shows the
sweep's counts, best, elapsed time and budget; piped output gets the plain lines only.
Driven by a real SweepTracker (sqlite MLflow store) through plain trial events."""

from __future__ import annotations

import io
from pathlib import Path

from raysweep.tracking.callbacks import SweepTracker
from raysweep.tracking.console import CLEAR_LINE, live_status
from raysweep.tracking.store import RunStore
from raysweep.tracking.trials import SweepState, TrialRecord, TrialState


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def screen(self) -> list[str]:
        """What a terminal shows: each line as its last carriage return and erase left it."""
        return [line.split(CLEAR_LINE)[-1] for line in self.getvalue().split("\n")]


def _sweep(tmp_path: Path, tty: bool) -> Terminal:
    store = RunStore(f"sqlite:///{tmp_path}/mlflow.db", "exp")
    tracker = SweepTracker(store, "s", store.open("sweep/s", "s"), "val_loss", "min", 2, budget=(3, 6))
    out = Terminal(tty)
    tracker.printer.stream = out
    report = {"epoch": 0, "val_loss": 0.5, "epochs_completed": 1}
    tracker.trial_started("a", {"lr": 0.1})
    tracker.trial_result("a", {"lr": 0.1}, report)
    tracker.trial_started("b", {"lr": 0.2})
    tracker.trial_completed("a", {"lr": 0.1})
    tracker.close("FINISHED")
    return out


def test_a_terminal_gets_a_live_line_under_the_event_lines(tmp_path: Path) -> None:
    out = _sweep(tmp_path, tty=True)
    screen = out.screen()
    events = [line for line in screen if line.startswith("[")]
    assert events == ["[a] started lr=0.1", "[a] epoch 0 val_loss=0.5 | new best val_loss=0.5", "[b] started lr=0.2",
                      "[a] stopped early after 1 epoch(s)"]
    assert screen[-1] == ""  # (closed: the live line erased, the summary starts on a clean line)
    drawn = [part for part in out.getvalue().split(CLEAR_LINE) if part.startswith("trials:")]
    assert drawn[-1].startswith("trials: 1 done (1 stopped early), 1 running, 1 to start | "
                                "best val_loss 0.5 (a) | 0:00:")
    assert drawn[-1].endswith(" | budget 2/3 trials, 1/6 epochs")


def test_piped_output_gets_plain_lines_only(tmp_path: Path) -> None:
    out = _sweep(tmp_path, tty=False)
    assert CLEAR_LINE not in out.getvalue() and "trials:" not in out.getvalue()
    assert out.getvalue().splitlines()[0] == "[a] started lr=0.1"


def test_the_status_counts_each_state_and_leaves_out_what_the_spec_does_not_cap() -> None:
    state = SweepState("val_loss", "min", 3)
    for name, end in [("a", TrialState.FINISHED), ("b", TrialState.FAILED), ("c", TrialState.RUNNING)]:
        record = state.add(TrialRecord(name, "run-" + name, {}))
        record.state = end
    assert live_status(state, started=100.0, now=100.0 + 3723) == \
        "trials: 2 done (1 finished, 1 failed), 1 running | 1:02:03"
