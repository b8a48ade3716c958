"""Pareto fronts and hypervolume of objective vectors, as plain data: no Ray, no MLflow.

Every function here minimizes: `minimized` turns a row of metrics into such a vector,
negating the ones to maximize. A vector with a NaN is never compared; it goes to a
last front of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MODES = ("min", "max")


def minimized(values: Mapping[str, float], metrics: Sequence[str], modes: Sequence[str]) -> tuple[float, ...]:
    """The named metrics of `values` as one vector, negated where the mode is "max"."""
    if any(mode not in MODES for mode in modes):
        raise ValueError(f"modes must be 'min' or 'max', got {list(modes)}")
    return tuple(-float(values[m]) if mode == "max" else float(values[m])
                 for m, mode in zip(metrics, modes, strict=True))


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether `a` is no worse than `b` in every component and better in one."""
    pairs = list(zip(a, b, strict=True))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def _has_nan(point: Sequence[float]) -> bool:
    return any(math.isnan(v) for v in point)


def non_dominated_fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of `points` by front: the non-dominated first, then those of the rest, and so
    on (fast non-dominated sort); points with a NaN form the last front."""
    valid = [i for i, p in enumerate(points) if not _has_nan(p)]
    dominated_by: dict[int, list[int]] = {i: [] for i in valid}
    count = dict.fromkeys(valid, 0)
    for n, i in enumerate(valid):
        for j in valid[n + 1:]:
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                count[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                count[i] += 1
    fronts: list[list[int]] = []
    front = [i for i in valid if count[i] == 0]
    while front:
        fronts.append(front)
        following: list[int] = []
        for i in front:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    following.append(j)
        front = sorted(following)
    nan_front = [i for i, p in enumerate(points) if _has_nan(p)]
    if nan_front:
        fronts.append(nan_front)
    return fronts


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points, in input order (none with a NaN)."""
    valid = [i for i, p in enumerate(points) if not _has_nan(p)]
    return [i for i in valid if not any(dominates(points[j], points[i]) for j in valid if j != i)]


def rank_order(points: Sequence[Sequence[float]]) -> list[int]:
    """All indices, best first: by front, then within a front by the first objective, the
    second, ... (and by index where the vectors are equal)."""

    def key(i: int) -> tuple[tuple[int, float], ...]:
        return tuple((1, 0.0) if math.isnan(v) else (0, v) for v in points[i])

    return [i for front in non_dominated_fronts(points) for i in sorted(front, key=lambda i: (key(i), i))]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume the points dominate, bounded by `reference`; a point not better than the
    reference in every component adds nothing. Exact: a sweep for 2 objectives, Optuna's
    WFG for more."""
    dims = len(reference)
    if dims == 0:
        raise ValueError("the reference point has no components")
    if any(len(p) != dims for p in points):
        raise ValueError(f"every point must have {dims} components, as the reference does")
    inside = [tuple(float(v) for v in p) for p in points if all(v < r for v, r in zip(p, reference, strict=True))]
    if not inside:
        return 0.0
    if dims == 1:
        return float(reference[0]) - min(p[0] for p in inside)
    if dims == 2:
        volume, ceiling = 0.0, float(reference[1])
        for x, y in sorted(inside):
            if y < ceiling:
                volume += (float(reference[0]) - x) * (ceiling - y)
                ceiling = y
        return volume
    from raysweep._upstream.optuna_internals import hypervolume as optuna_hypervolume

    return optuna_hypervolume(inside, reference)
