"""raysweep: Optuna sweeps of data-parallel PyTorch training on Ray, logged to MLflow."""

from __future__ import annotations

from typing import Any

__all__ = ["Spec", "TrainContext", "UserInputError", "RunFailedError", "load_spec"]
__version__ = "0.1.0"

_HOMES = {"Spec": "raysweep.spec", "load_spec": "raysweep.spec", "TrainContext": "raysweep.context",
          "UserInputError": "raysweep.errors", "RunFailedError": "raysweep.errors"}


def __getattr__(name: str) -> Any:
    """Lazy: `import raysweep.context` (what trainers need) pulls in torch, numpy and
    pyarrow only, not pydantic, YAML, Ray or MLflow."""
    if name not in _HOMES:
        raise AttributeError(f"module 'raysweep' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
