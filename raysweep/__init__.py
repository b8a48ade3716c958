"""raysweep: Optuna sweeps of data-parallel PyTorch training on Ray, logged to MLflow."""

from raysweep.context import TrainContext
from raysweep.errors import RunFailedError, UserInputError
from raysweep.spec import Spec, load_spec

__all__ = ["Spec", "TrainContext", "UserInputError", "RunFailedError", "load_spec"]
__version__ = "0.1.0"
