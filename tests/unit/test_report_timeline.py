"""The report's timeline: each trial on the first slot of its host that is free when it
starts, one bar per trial in the drawing, and the slots' busy share counted from the bars."""

from __future__ import annotations

from pathlib import Path

from raysweep.tracking.html_report import STATE_COLORS, _plot_timeline, timeline_lanes
from raysweep.tracking.trials import TrialState

MIN = 60_000


def _trial(name: str, start: float, end: float | None, node: str = "10.0.0.1",
           state: TrialState = TrialState.FINISHED) -> dict:
    return {"trial": name, "start": start * MIN, "end": None if end is None else end * MIN, "node": node,
            "state": state}


def test_trials_take_the_first_free_slot_of_their_host() -> None:
    trials = [_trial("a", 0, 2), _trial("b", 0, 1), _trial("c", 1, 3), _trial("d", 2.5, None),
              _trial("e", 0, 4, node="10.0.0.2")]
    placed = {t["trial"]: (host, lane) for host, lane, t in timeline_lanes(trials, now_ms=5 * MIN)}
    assert placed == {"a": ("10.0.0.1", 0), "b": ("10.0.0.1", 1), "c": ("10.0.0.1", 1),
                      "d": ("10.0.0.1", 0), "e": ("10.0.0.2", 0)}


def test_the_drawing_has_one_bar_per_trial_and_counts_idle_time(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    drawn: list = []
    real = Figure.savefig

    def keep(fig, *args, **kwargs):  # type: ignore[no-untyped-def]
        drawn.append(fig)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    trials = [_trial("a", 0, 2), _trial("b", 0, 1, state=TrialState.FAILED), _trial("c", 3, 4),
              _trial("d", 1, 4, state=TrialState.STOPPED_EARLY)]
    note = _plot_timeline(trials, tmp_path / "timeline.png", now_ms=4 * MIN)
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    (ax,) = drawn[0].axes
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert len(bars) == len(trials)
    assert sorted(round(p.get_width(), 3) for p in bars) == [1.0, 1.0, 2.0, 3.0]
    colors = {tuple(round(c, 3) for c in p.get_facecolor()[:3]) for p in bars}
    assert len(colors) == 3  # (finished, failed, stopped early)
    # 2 slots over 4 minutes, bars of 7 minutes in all: busy 7/8 of the slot time.
    assert note == "4 trial(s) on 2 slot(s) over 4.0 min; the slots were busy 88% of that time"
    assert set(STATE_COLORS) == set(TrialState)
