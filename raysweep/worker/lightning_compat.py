"""Lightning under either name: `lightning.pytorch` or `pytorch_lightning`.

The two packages ship the same classes under two namespaces whose classes do not mix:
a `pytorch_lightning.Trainer` refuses a `lightning.pytorch` strategy, and the other
way round. Where both are installed (GPU images often have both), Ray's
`ray.train.lightning` builds RayDDPStrategy and RayLightningEnvironment on
`lightning.pytorch`. raysweep therefore takes everything (Trainer, callback, strategy,
cluster environment, prepare_trainer) from the namespace the user's LightningModule
subclasses, and uses Ray's pieces only where they are of that namespace; otherwise
`ray_pieces` builds the same small classes for it (mirroring
ray/train/lightning/_lightning_utils.py, less Ray's usage tags).

Nothing here imports a Lightning package the user's code did not import already,
except `ray_pieces` (Ray's integration imports its own choice).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

NAMESPACES = ("lightning.pytorch", "pytorch_lightning")
"""Where a LightningModule may come from; a Trainer, strategy and callbacks must
come from the same one."""


def namespace_of(obj: Any) -> ModuleType | None:
    """The Lightning namespace (the `lightning.pytorch` or `pytorch_lightning` module)
    whose LightningModule the class `obj`, or the class of `obj`, subclasses; None:
    not a LightningModule of either. Only namespaces already imported are looked at
    (a subclass's namespace is imported by the time the subclass exists)."""
    cls = obj if inspect.isclass(obj) else type(obj)
    for name in NAMESPACES:
        namespace = sys.modules.get(name)
        base = getattr(namespace, "LightningModule", None)
        if inspect.isclass(base) and issubclass(cls, base):
            return namespace
    return None


@dataclass(frozen=True)
class RayPieces:
    """Ray Train's Lightning integration for one namespace."""

    strategy: type
    """RayDDPStrategy: DDP on Ray Train's process group and device."""
    environment: type
    """RayLightningEnvironment: ranks and world size from Ray Train's context."""
    prepare_trainer: Any
    """prepare_trainer(trainer) -> trainer: checks the two above are in use."""
    from_ray: bool
    """Ray's own classes (True), or raysweep's for the other namespace."""


def ray_pieces(namespace: ModuleType) -> RayPieces:
    """RayDDPStrategy, RayLightningEnvironment and prepare_trainer for `namespace`:
    Ray's own where `ray.train.lightning` is built on it, else raysweep's equivalents."""
    return _ray_pieces(namespace.__name__)


@functools.cache
def _ray_pieces(name: str) -> RayPieces:
    namespace = importlib.import_module(name)
    try:  # (lazy: workers that run a LightningModule only)
        from ray.train import lightning as ray_lightning
    except Exception:  # noqa: BLE001 (Ray's own pick of namespace does not import: ours still can)
        return _mirror(namespace)
    if (issubclass(ray_lightning.RayDDPStrategy, namespace.strategies.DDPStrategy)
            and issubclass(ray_lightning.RayLightningEnvironment, _environments(name).LightningEnvironment)):
        return RayPieces(ray_lightning.RayDDPStrategy, ray_lightning.RayLightningEnvironment,
                         ray_lightning.prepare_trainer, from_ray=True)
    return _mirror(namespace)


def _environments(name: str) -> ModuleType:
    """`<namespace>.plugins.environments` (not an attribute until imported)."""
    return importlib.import_module(f"{name}.plugins.environments")


def _mirror(pl: ModuleType) -> RayPieces:
    """Ray's RayDDPStrategy, RayLightningEnvironment and prepare_trainer, built on `pl`."""
    import ray.train
    import ray.train.torch

    strategy_base: Any = pl.strategies.DDPStrategy
    environment_base: Any = _environments(pl.__name__).LightningEnvironment

    class RayDDPStrategy(strategy_base):
        """DDPStrategy on Ray Train's device; the sampler ranks from Lightning's
        (the process group itself is Ray Train's, set up before the Trainer)."""

        @property
        def root_device(self) -> Any:
            return ray.train.torch.get_device()

        @property
        def distributed_sampler_kwargs(self) -> dict[str, Any]:
            return dict(num_replicas=self.world_size, rank=self.global_rank)

    class RayLightningEnvironment(environment_base):
        """World size and ranks from Ray Train's context."""

        def world_size(self) -> int:
            return ray.train.get_context().get_world_size()

        def global_rank(self) -> int:
            return ray.train.get_context().get_world_rank()

        def local_rank(self) -> int:
            return ray.train.get_context().get_local_rank()

        def node_rank(self) -> int:
            return ray.train.get_context().get_node_rank()

        def set_world_size(self, size: int) -> None:
            pass  # world_size() reads Ray Train's context

        def set_global_rank(self, rank: int) -> None:
            pass  # global_rank() reads Ray Train's context

        def teardown(self) -> None:
            pass

    def prepare_trainer(trainer: Any) -> Any:
        if not isinstance(trainer.strategy, RayDDPStrategy):
            raise RuntimeError(f"Invalid strategy class: {type(trainer.strategy)}; with Ray the strategy "
                               f"must be {pl.__name__}'s RayDDPStrategy (raysweep.worker.lightning_compat)")
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if environment and not isinstance(environment, RayLightningEnvironment):
            raise RuntimeError(f"Invalid cluster environment plugin: {type(environment)}; with Ray it must be "
                               f"{pl.__name__}'s RayLightningEnvironment (raysweep.worker.lightning_compat)")
        return trainer

    return RayPieces(RayDDPStrategy, RayLightningEnvironment, prepare_trainer, from_ray=False)
