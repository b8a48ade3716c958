"""The spec's search space as Optuna distributions."""

from __future__ import annotations

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from raysweep.config.spec import CategoricalParam, FloatParam, IntParam, SearchParam


def to_distribution(param: SearchParam) -> BaseDistribution:
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, CategoricalParam):
        return CategoricalDistribution(param.choices)
    raise TypeError(f"unknown search param {param!r}")


def to_optuna_space(space: dict[str, SearchParam]) -> dict[str, BaseDistribution]:
    return {name: to_distribution(param) for name, param in space.items()}
