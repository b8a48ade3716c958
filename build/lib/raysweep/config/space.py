"""The spec's search space as Optuna distributions, or as a define-by-run function
when params are conditional (`when:`) or the spec names a `space_function`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from raysweep.config.spec import CategoricalParam, FloatParam, IntParam, SearchParam, Spec


def to_distribution(param: SearchParam) -> BaseDistribution:
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, CategoricalParam):
        return CategoricalDistribution(param.choices)
    raise TypeError(f"unknown search param {param!r}")


def to_optuna_space(space: Mapping[str, SearchParam]) -> dict[str, BaseDistribution]:
    return {name: to_distribution(param) for name, param in space.items()}


def is_active(param: SearchParam, values: Mapping[str, Any]) -> bool:
    """Whether a param's `when:` holds for the values drawn so far (no `when`: always)."""
    return all(values.get(key, _ABSENT) in allowed for key, allowed in param.when_values().items())


_ABSENT = object()


def load_space_function(path: str) -> Callable[[Any], dict[str, Any] | None]:
    """`module:function`, imported (from the repo root, as trainers are)."""
    module, _, name = path.partition(":")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"{path} is not a function")
    return function


class DefineByRun:
    """The space as Optuna's define-by-run function: YAML params in dependency order, a
    conditional one only when its `when:` holds, then the spec's `space_function`.
    Picklable (Tune stores its searcher, and this with it)."""

    def __init__(self, space: Mapping[str, SearchParam], function: str | None = None) -> None:
        self.space, self.function = dict(space), function

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        values: dict[str, Any] = {}
        for name in dependency_order(self.space):
            param = self.space[name]
            if is_active(param, values):
                values[name] = suggest(trial, name, param)
        if self.function is None:
            return None
        return load_space_function(self.function)(trial)


def suggest(trial: Any, name: str, param: SearchParam) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return trial.suggest_int(name, param.low, param.high, log=param.log, step=param.step)
    return trial.suggest_categorical(name, param.choices)


def dependency_order(space: Mapping[str, SearchParam]) -> list[str]:
    """The space's names, each after the params its `when:` names (the spec's order
    otherwise). Assumes no cycle (the spec's validation refuses one)."""
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        placed.add(name)
        for key in space[name].when_values():
            if key in space:
                place(key)
        order.append(name)

    for name in space:
        place(name)
    return order


def search_space(spec: Spec) -> dict[str, BaseDistribution] | DefineByRun:
    """What OptunaSearch gets: plain distributions for a flat space (so flat sweeps draw
    exactly as before), the define-by-run function otherwise."""
    if spec.space_function is None and not any(p.when for p in spec.space.values()):
        return to_optuna_space(spec.space)
    return DefineByRun(spec.space, spec.space_function)


def first_values(space: Mapping[str, SearchParam]) -> dict[str, Any]:
    """One valid draw (low, or the first choice), conditional params only where active:
    the values `raysweep check` trains its trial step with."""
    values: dict[str, Any] = {}
    for name in dependency_order(space):
        param = space[name]
        if is_active(param, values):
            values[name] = param.choices[0] if isinstance(param, CategoricalParam) else param.low
    return values
