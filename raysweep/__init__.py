"""raysweep: Optuna sweeps of data-parallel PyTorch training on Ray, logged to MLflow.

The Python API (what the CLI calls):

    import raysweep
    raysweep.check("search_spaces/digits_mlp.yaml")         # validate; starts nothing
    run = raysweep.train("search_spaces/digits_mlp.yaml")    # one recorded training run
    sweep = raysweep.tune("search_spaces/digits_mlp.yaml", ["budget.num_trials=4"])

Trainers import only `raysweep.TrainContext` (torch, numpy, pyarrow: no Ray).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["check", "train", "tune", "reproduce", "load_spec", "Spec", "TrainContext",
           "UserInputError", "RunFailedError"]
__version__ = "0.1.0"

_HOMES = {"check": "raysweep.prepare", "train": "raysweep.run", "tune": "raysweep.run",
          "reproduce": "raysweep.reproduce", "load_spec": "raysweep.config.load", "Spec": "raysweep.config.spec",
          "TrainContext": "raysweep.worker.context", "UserInputError": "raysweep.errors",
          "RunFailedError": "raysweep.errors"}
_NAMES = {"check": "prepare"}


def __getattr__(name: str) -> Any:
    """Lazy: `import raysweep` loads nothing heavy; a trainer's `raysweep.TrainContext`
    pulls in torch, numpy and pyarrow only, not pydantic, YAML, Ray or MLflow."""
    if name not in _HOMES:
        raise AttributeError(f"module 'raysweep' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), _NAMES.get(name, name))
