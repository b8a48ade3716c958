"""torch and Lightning internals: a Lightning trainer's full checkpoint as a dict in
memory (what `trainer.save_checkpoint` writes to a file), and the abort of an NCCL
process group whose peer died (else NCCL waits for it until its timeout).

Why private: Lightning writes its full checkpoint only to a path (raysweep reports it
to Ray in memory); torch's process-group abort is experimental. Recheck on an upgrade:
the pinned sources, then tests/integration/test_lightning_on_ray.py and the warm-group
fault cases.
"""

from __future__ import annotations

from typing import Any

from raysweep._upstream import Pin

CHECKED = ("2.60.0", "2.61.0")  # (Ray; the pins below hold the torch and Lightning sources)
PINS: list[Pin] = [  # (python -m raysweep._upstream prints the current digests)
    Pin('pytorch_lightning.trainer.connectors.checkpoint_connector:_CheckpointConnector.dump_checkpoint',
        'ed1424ae6a37e543'),
    Pin('torch.distributed.distributed_c10d:_abort_process_group',
        'f226920f862c2bc0'),
]


def lightning_checkpoint(trainer: Any) -> dict[str, Any]:
    """The trainer's full checkpoint (weights, optimizers, loops, callbacks) as a dict."""
    return trainer._checkpoint_connector.dump_checkpoint(weights_only=False)


def abort_process_groups() -> None:
    """Abort this process's process groups (NCCL: pending collectives end now)."""
    import torch.distributed as dist

    dist.distributed_c10d._abort_process_group()
