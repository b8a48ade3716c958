"""MultiObjectiveASHA and its promotion rule, driven by plain results (no Ray cluster)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest
from ray.tune.schedulers import TrialScheduler

from raysweep.driver.mo_asha import MultiObjectiveASHA, promote

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


@dataclass
class FakeTrial:
    trial_id: str


def result(epochs: int, loss: float, latency: float, **extra) -> dict:
    return {"epochs_completed": epochs, "val_loss": loss, "latency": latency, "training_iteration": epochs, **extra}


def scheduler(**kwargs) -> MultiObjectiveASHA:
    args = {"metrics": ["val_loss", "latency"], "modes": ["min", "min"], "max_t": 8, "grace_period": 1,
            "reduction_factor": 2.0, **kwargs}
    return MultiObjectiveASHA(**args)


def test_the_first_at_a_rung_continues():
    assert promote([], (9.0, 9.0), 2.0)
    assert promote([], (float("nan"), 0.0), 2.0)


def test_a_dominated_second_candidate_stops():
    assert not promote([(1.0, 1.0)], (2.0, 2.0), 2.0)
    assert promote([(2.0, 2.0)], (1.0, 1.0), 2.0)


def test_a_non_dominated_candidate_with_the_higher_first_objective_stops():
    """(2, 1) and (1, 2) share front 0; the tie-break puts the lower first objective first,
    so (2, 1) arriving second takes position 1 of ceil(2 / 2) = 1 promoted."""
    assert not promote([(1.0, 2.0)], (2.0, 1.0), 2.0)
    assert promote([(2.0, 1.0)], (1.0, 2.0), 2.0)


def test_a_candidate_equal_to_a_recorded_vector_goes_on():
    assert promote([(1.0, 1.0)], (1.0, 1.0), 2.0)


def test_the_position_rule_with_three_recorded():
    """4 vectors at rf 2: positions 0 and 1 (ceil(4 / 2) = 2) go on."""
    recorded = [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert promote(recorded, (0.5, 0.5), 2.0)
    assert promote(recorded, (1.5, 1.5), 2.0)
    assert promote(recorded, (0.5, 5.0), 2.0)  # front 0 with (1, 1), first by its first objective
    assert not promote(recorded, (2.5, 2.5), 2.0)
    assert promote(recorded, (5.0, 0.5), 2.0)  # front 0, after (1, 1): position 1
    assert not promote(recorded, (4.0, 4.0), 2.0)
    assert promote(recorded, (2.5, 2.5), 1.5)  # ceil(4 / 1.5) = 3
    assert not promote([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)], (4.0, 0.5), 2.0)  # all front 0: position 3
    assert promote([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)], (1.5, 2.5), 2.0)  # all front 0: position 1


def test_rungs():
    assert scheduler().milestones == [1, 2, 4]
    assert scheduler(max_t=9).milestones == [1, 2, 4, 8]
    assert scheduler(grace_period=2, reduction_factor=3, max_t=20).milestones == [2, 6, 18]
    assert scheduler(grace_period=8).milestones == []


@pytest.mark.parametrize("kwargs", [{"metrics": [], "modes": []}, {"modes": ["min"]}, {"modes": ["min", "up"]},
                                    {"reduction_factor": 1.0}, {"grace_period": 0}, {"grace_period": 9}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        scheduler(**kwargs)


def test_a_trial_dominated_at_rung_one_is_stopped():
    s = scheduler()
    a, b, c = FakeTrial("a"), FakeTrial("b"), FakeTrial("c")
    assert s.on_trial_result(None, a, result(1, 0.5, 10.0)) == CONTINUE
    assert s.on_trial_result(None, b, result(1, 0.6, 11.0)) == STOP
    assert s.on_trial_result(None, c, result(1, 0.4, 9.0)) == CONTINUE
    assert s.recorded(1) == {"a": (0.5, 10.0), "b": (0.6, 11.0), "c": (0.4, 9.0)}
    assert s.recorded(2) == {}
    assert "num_stopped=1" in s.debug_string()


def test_each_rung_judges_a_trial_once():
    s = scheduler()
    a, b = FakeTrial("a"), FakeTrial("b")
    assert s.on_trial_result(None, a, result(1, 0.5, 10.0)) == CONTINUE
    assert s.on_trial_result(None, a, result(2, 0.4, 10.0)) == CONTINUE
    assert s.on_trial_result(None, a, result(3, 0.3, 10.0)) == CONTINUE
    assert s.on_trial_result(None, b, result(1, 0.1, 1.0)) == CONTINUE
    assert s.on_trial_result(None, b, result(2, 0.9, 90.0)) == STOP
    assert s.recorded(1) == {"a": (0.5, 10.0), "b": (0.1, 1.0)}
    assert s.recorded(2) == {"a": (0.4, 10.0), "b": (0.9, 90.0)}


def test_a_jump_past_several_rungs_is_judged_at_the_highest_reached():
    s = scheduler()
    assert s.on_trial_result(None, FakeTrial("a"), result(1, 0.5, 10.0)) == CONTINUE
    assert s.on_trial_result(None, FakeTrial("b"), result(5, 0.1, 1.0)) == CONTINUE
    assert s.recorded(4) == {"b": (0.1, 1.0)}
    assert s.recorded(1) == {"a": (0.5, 10.0)}


def test_max_t_stops():
    s = scheduler()
    t = FakeTrial("a")
    for epoch in range(1, 8):
        assert s.on_trial_result(None, t, result(epoch, 0.5, 10.0)) == CONTINUE
    assert s.on_trial_result(None, t, result(8, 0.5, 10.0)) == STOP
    assert s.on_trial_result(None, FakeTrial("b"), result(9, 0.1, 1.0)) == STOP


def test_a_result_without_the_metrics_continues_unrecorded():
    s = scheduler()
    s.on_trial_result(None, FakeTrial("a"), result(1, 0.5, 10.0))
    b = FakeTrial("b")
    assert s.on_trial_result(None, b, {"epochs_completed": 1, "val_loss": 0.9, "checkpoint_dir_name": "c"}) == CONTINUE
    assert s.on_trial_result(None, b, {"val_loss": 0.9, "latency": 90.0}) == CONTINUE
    assert s.on_trial_result(None, b, {"epochs_completed": 8, "checkpoint_dir_name": "c"}) == CONTINUE
    assert s.on_trial_result(None, b, result(1, 0.9, None)) == CONTINUE
    assert set(s.recorded(1)) == {"a"}
    assert s.on_trial_result(None, b, result(1, 0.9, 90.0)) == STOP


def test_a_max_metric():
    s = scheduler(metrics=["accuracy", "latency"], modes=["max", "min"])
    a, b, c = FakeTrial("a"), FakeTrial("b"), FakeTrial("c")
    assert s.on_trial_result(None, a, {"epochs_completed": 1, "accuracy": 0.8, "latency": 10.0}) == CONTINUE
    assert s.on_trial_result(None, b, {"epochs_completed": 1, "accuracy": 0.7, "latency": 10.0}) == STOP
    assert s.on_trial_result(None, c, {"epochs_completed": 1, "accuracy": 0.9, "latency": 10.0}) == CONTINUE
    assert s.recorded(1)["c"] == (-0.9, 10.0)


def test_on_trial_complete_records_a_result_not_judged():
    s = scheduler()
    s.on_trial_complete(None, FakeTrial("a"), result(2, 0.5, 10.0))
    s.on_trial_complete(None, FakeTrial("b"), result(8, 0.5, 10.0))
    assert s.recorded(2) == {"a": (0.5, 10.0)}
    assert s.on_trial_result(None, FakeTrial("c"), result(2, 0.6, 11.0)) == STOP


def test_search_properties_are_accepted_and_ignored():
    s = scheduler()
    assert s.set_search_properties(None, None, config={})
    assert s.set_search_properties("val_loss", "min")
    assert s.metric is None
    assert s.on_trial_result(None, FakeTrial("a"), result(1, 0.5, 10.0)) == CONTINUE


def test_pickles_with_its_recorded_state():
    s = scheduler()
    s.on_trial_result(None, FakeTrial("a"), result(1, 0.5, 10.0))
    s.on_trial_result(None, FakeTrial("b"), result(1, 0.6, 11.0))
    s.on_trial_result(None, FakeTrial("a"), result(2, 0.4, 10.0))
    restored = pickle.loads(pickle.dumps(s))
    assert restored.milestones == [1, 2, 4]
    assert restored.recorded(1) == s.recorded(1) and restored.recorded(2) == {"a": (0.4, 10.0)}
    assert restored.debug_string() == s.debug_string()
    assert restored.on_trial_result(None, FakeTrial("c"), result(2, 0.45, 10.5)) == STOP
    assert "c" not in s.recorded(2)


def test_hyperband_brackets_start_their_rungs_later():
    """Bracket s's first rung is at grace_period * reduction_factor**s (max_t 16: rungs
    1-2-4-8, 2-4-8, 4-8, 8); a trial is judged only at its bracket's rungs."""
    from raysweep.config.spec import max_brackets

    assert max_brackets(16, 1, 2.0) == 4 and max_brackets(4, 4, 2.0) == 1
    hb = scheduler(max_t=16, brackets=4, metrics=["val_loss"], modes=["min"])
    assert [hb.bracket_milestones(s) for s in range(4)] == [[1, 2, 4, 8], [2, 4, 8], [4, 8], [8]]
    by_bracket: dict[int, list[str]] = {}
    for i in range(400):
        by_bracket.setdefault(hb.bracket_of(f"t{i}"), []).append(f"t{i}")
    # Ray's weights: e**(rung count - the most), so bracket 0 (4 rungs) most often.
    counts = [len(by_bracket.get(s, [])) for s in range(4)]
    assert counts[0] > counts[1] > counts[2] > counts[3] > 0, counts
    late = by_bracket[2][0]  # (first rung at 4 epochs)
    best = by_bracket[2][1]
    assert hb.on_trial_result(None, FakeTrial(best), {"epochs_completed": 4, "val_loss": 0.1}) == CONTINUE
    for epoch in (1, 2, 3):  # (worse than anything, but not judged before its bracket's first rung)
        assert hb.on_trial_result(None, FakeTrial(late), {"epochs_completed": epoch, "val_loss": 9.0}) == CONTINUE
    assert hb.on_trial_result(None, FakeTrial(late), {"epochs_completed": 4, "val_loss": 9.0}) == STOP
    assert hb.recorded(4, bracket=2) == {best: (0.1,), late: (9.0,)} and hb.recorded(4, bracket=0) == {}


def test_hyperband_brackets_are_the_same_for_the_same_seed():
    ids = [f"trial-{i}" for i in range(50)]
    one, two, other = (scheduler(max_t=16, brackets=3, seed=s) for s in (7, 7, 8))
    assert [one.bracket_of(t) for t in ids] == [two.bracket_of(t) for t in ids] != [other.bracket_of(t) for t in ids]
    with pytest.raises(ValueError, match="brackets must be 1 to 4"):
        scheduler(max_t=16, brackets=5)
