"""Pareto fronts, rank order and hypervolume on hand-made point sets."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from raysweep.tracking.pareto import (
    dominates,
    hypervolume,
    minimized,
    non_dominated_fronts,
    pareto_front,
    rank_order,
)

NAN = float("nan")


def test_minimized_negates_max_metrics():
    row = {"val_loss": 0.5, "accuracy": 0.9, "latency_ms": 12.0}
    assert minimized(row, ["val_loss", "accuracy"], ["min", "max"]) == (0.5, -0.9)
    assert minimized(row, ["accuracy"], ["max"]) == (-0.9,)
    with pytest.raises(ValueError):
        minimized(row, ["val_loss"], ["lowest"])
    with pytest.raises(ValueError):
        minimized(row, ["val_loss", "accuracy"], ["min"])
    with pytest.raises(KeyError):
        minimized(row, ["missing"], ["min"])


def test_dominates():
    assert dominates((1, 2), (2, 3))
    assert dominates((1, 2), (1, 3))
    assert not dominates((1, 2), (1, 2))
    assert not dominates((1, 3), (2, 2))
    assert not dominates((2, 3), (1, 2))
    assert not dominates((NAN, 0), (1, 1))
    assert not dominates((0, 0), (NAN, 1))


def test_fronts_of_a_hand_made_set():
    points = [(1, 5), (2, 2), (5, 1), (3, 3), (4, 4), (2, 6), (6, 6)]
    assert non_dominated_fronts(points) == [[0, 1, 2], [3, 5], [4], [6]]
    assert pareto_front(points) == [0, 1, 2]


def test_ties_and_duplicates_share_a_front():
    points = [(2, 2), (1, 3), (2, 2), (1, 3), (2, 3)]
    assert non_dominated_fronts(points) == [[0, 1, 2, 3], [4]]
    assert pareto_front(points) == [0, 1, 2, 3]


def test_a_max_objective_through_minimized():
    rows = [{"loss": 1.0, "acc": 0.7}, {"loss": 2.0, "acc": 0.9}, {"loss": 2.0, "acc": 0.8},
            {"loss": 0.5, "acc": 0.6}]
    points = [minimized(r, ["loss", "acc"], ["min", "max"]) for r in rows]
    assert non_dominated_fronts(points) == [[0, 1, 3], [2]]
    as_if_min = [(r["loss"], r["acc"]) for r in rows]
    assert non_dominated_fronts(as_if_min) == [[3], [0], [2], [1]]


def test_nan_points_get_a_last_front_of_their_own():
    points = [(NAN, 1), (3, 3), (1, 1), (2, NAN)]
    assert non_dominated_fronts(points) == [[2], [1], [0, 3]]
    assert pareto_front(points) == [2]
    assert rank_order(points) == [2, 1, 3, 0]
    assert pareto_front([(NAN, NAN)]) == []


def test_empty_input():
    assert non_dominated_fronts([]) == []
    assert pareto_front([]) == []
    assert rank_order([]) == []
    assert hypervolume([], (1, 1)) == 0.0


def test_every_index_appears_once_and_no_front_member_is_dominated():
    rng = random.Random(7)
    points = [(rng.randint(0, 5), rng.randint(0, 5), rng.randint(0, 5)) for _ in range(60)]
    fronts = non_dominated_fronts(points)
    assert sorted(itertools.chain.from_iterable(fronts)) == list(range(len(points)))
    for k, front in enumerate(fronts):
        rest = list(itertools.chain.from_iterable(fronts[k:]))
        for i in front:
            assert not any(dominates(points[j], points[i]) for j in rest)
        if k:
            assert all(any(dominates(points[j], points[i]) for j in fronts[k - 1]) for i in front)
    assert pareto_front(points) == fronts[0]


def test_rank_order_breaks_ties_by_the_first_objective_then_the_second():
    points = [(3, 1), (1, 3), (2, 2), (4, 4), (1, 5), (2, 2), (3, 3)]
    # front 0: (3,1) (1,3) (2,2) (2,2); front 1: (1,5) (3,3); front 2: (4,4)
    assert rank_order(points) == [1, 2, 5, 0, 4, 6, 3]
    assert rank_order([(1, 2, 9), (1, 2, 3), (1, 1, 9)]) == [2, 1, 0]


def test_hypervolume_2d_by_hand():
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(6.0)
    assert hypervolume([(3, 1), (1, 3), (2, 2)], (4, 4)) == pytest.approx(6.0)
    assert hypervolume([(1, 1)], (3, 2)) == pytest.approx(2.0)
    # a dominated point and a duplicate add nothing
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3), (2, 2)], (4, 4)) == pytest.approx(6.0)
    # two overlapping boxes: 3*1 + 1*3 - 1*1
    assert hypervolume([(1, 3), (3, 1)], (4, 4)) == pytest.approx(5.0)


def test_points_beyond_the_reference_contribute_nothing():
    assert hypervolume([(5, 5)], (4, 4)) == 0.0
    assert hypervolume([(4, 1)], (4, 4)) == 0.0
    assert hypervolume([(1, 3), (2, 2), (3, 1), (0, 4), (5, 0), (NAN, 0)], (4, 4)) == pytest.approx(6.0)
    assert hypervolume([(1, 1, 1), (0, 5, 0)], (2, 2, 2)) == pytest.approx(1.0)


def test_hypervolume_3d():
    assert hypervolume([(1, 2, 3)], (4, 4, 4)) == pytest.approx(3 * 2 * 1)
    assert hypervolume([(0.5, 1.0, 1.5)], (2, 2, 2)) == pytest.approx(1.5 * 1.0 * 0.5)
    # two 2x2x1 slabs in the 2-cube, overlapping in a 2x1x1 box: 4 + 4 - 2
    assert hypervolume([(0, 0, 1), (0, 1, 0)], (2, 2, 2)) == pytest.approx(6.0)
    # the 2-D staircase extruded by a depth of 2
    assert hypervolume([(1, 3, 0), (2, 2, 0), (3, 1, 0)], (4, 4, 2)) == pytest.approx(12.0)


def test_hypervolume_4d_single_point_and_bad_shapes():
    assert hypervolume([(1, 1, 1, 1)], (2, 3, 4, 5)) == pytest.approx(1 * 2 * 3 * 4)
    with pytest.raises(ValueError):
        hypervolume([(1, 1, 1)], (2, 2))
    with pytest.raises(ValueError):
        hypervolume([()], ())
    assert math.isinf(hypervolume([(1, 1)], (math.inf, 2)))
