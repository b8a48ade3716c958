"""Constraints on reported metrics (`constraints: ["params_count <= 1e6"]`), as plain data."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_FORM = re.compile(r"^\s*([A-Za-z_][\w./-]*)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """`metric <= bound` or `metric >= bound` on a metric the trainer reports."""

    metric: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        match = _FORM.match(text)
        if match is None:
            raise ValueError("a constraint reads 'METRIC <= NUMBER' or 'METRIC >= NUMBER'")
        bound = float(match.group(3))
        if not math.isfinite(bound):
            raise ValueError("a constraint's bound must be finite")
        return cls(match.group(1), match.group(2), bound)

    def violation(self, values: Mapping[str, float]) -> float:
        """How far `values` are outside the constraint (<= 0: met; Optuna's
        constraints_func convention); a missing or non-finite metric: +inf."""
        value = values.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return math.inf
        return float(value) - self.bound if self.op == "<=" else self.bound - float(value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def violations(constraints: Sequence[Constraint], values: Mapping[str, float]) -> list[float]:
    return [c.violation(values) for c in constraints]


def feasible(constraints: Sequence[Constraint], values: Mapping[str, float]) -> bool:
    return all(v <= 0 for v in violations(constraints, values))
