"""How a plain trainer's model is spread over its ranks, in what precision, compiled or
not, and how its state is taken and put back (the spec's `scaling` section).

- `strategy: ddp` wraps the model in DistributedDataParallel (every rank holds all
  weights, gradients are all-reduced); `fsdp` applies FSDP2 (`fully_shard`) to each
  shard unit and then the root, so each rank holds 1/N of the weights, gradients and
  optimizer state. One rank: neither (the model as it is).
- `precision`: `32`; `bf16-mixed` (bf16 compute, fp32 weights: autocast under DDP,
  FSDP2's MixedPrecisionPolicy with fp32 gradient reduction under FSDP); `bf16-true`
  (the weights themselves in bf16).
- `accumulate_steps`: gradients of N micro-batches are summed before one optimizer
  step; only the last micro-step communicates (DDP's and FSDP2's gradient sync off
  for the others).
- `compile`: torch.compile of the wrapped model.

State goes through torch.distributed.checkpoint.state_dict (public since torch 2.2):
the same keys (parameter names, no `module.` prefix, optimizer state keyed by
parameter name) whatever the strategy, so a DDP checkpoint resumes under FSDP and the
other way round. Under FSDP the state stays sharded (each rank saves its shards, see
raysweep.worker.checkpoint); otherwise it is a full state dict rank 0 saves.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

from raysweep._ray_compat import keep_stdlib_distutils
from raysweep.worker.checkpoint import SHARDED


@dataclass(frozen=True)
class ParallelSettings:
    """The spec's scaling.strategy, precision, accumulate_steps, compile and
    shard_modules, as plain data for the workers."""

    strategy: str = "ddp"
    precision: str = "32"
    accumulate_steps: int = 1
    compile: str = "false"
    shard_modules: tuple[str, ...] = ()


def shard_units(model: nn.Module, names: tuple[str, ...] = ()) -> list[nn.Module]:
    """The submodules FSDP shards one by one (each gathers its weights only while it
    runs): the model's `shard_units()` if it defines one; else the modules whose class
    name is in `names` (scaling.shard_modules); else the children of every
    nn.ModuleList (a transformer's blocks); else the model's direct children that
    hold parameters."""
    hook = getattr(model, "shard_units", None)
    if callable(hook):
        return list(hook())
    if names:
        return [m for m in model.modules() if type(m).__name__ in names and m is not model]
    blocks = [child for m in model.modules() if isinstance(m, nn.ModuleList) for child in m]
    if blocks:
        return blocks
    return [child for child in model.children() if any(True for _ in child.parameters())]


@dataclass
class Prepared:
    """A model made ready for training: `model` is what the trainer calls, `inner` the
    DDP or FSDP module (for gradient sync), `sharded` whether its state is sharded."""

    model: nn.Module
    inner: nn.Module
    sharded: bool


def prepare(model: nn.Module, settings: ParallelSettings, device: torch.device, world_size: int) -> Prepared:
    """Move `model` to `device` and apply precision, the strategy and compile."""
    model = model.to(device)
    if settings.precision == "bf16-true":
        model = model.to(torch.bfloat16)
    inner: nn.Module = model
    sharded = False
    if world_size > 1 and dist.is_initialized():
        if settings.strategy == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
                if settings.precision == "bf16-mixed" else MixedPrecisionPolicy()
            for unit in shard_units(model, settings.shard_modules):
                fully_shard(unit, mp_policy=policy)
            fully_shard(model, mp_policy=policy)  # (in place: `model` is now an FSDPModule)
            sharded = True
        else:
            ids = [device.index] if device.type == "cuda" else None
            inner = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    wrapped = inner
    if settings.compile != "false":
        keep_stdlib_distutils()
        wrapped = torch.compile(inner, mode=None if settings.compile == "default" else settings.compile)  # type: ignore[assignment]
    return Prepared(wrapped, inner, sharded)


def set_gradient_sync(prepared: Prepared, on: bool) -> None:
    """Whether the next backward communicates gradients (off for the micro-steps of an
    accumulation group but the last; set before the forward)."""
    inner = prepared.inner
    if isinstance(inner, torch.nn.parallel.DistributedDataParallel):
        inner.require_backward_grad_sync = on  # (what DDP.no_sync() toggles)
    elif prepared.sharded:
        from torch.distributed.fsdp import FSDPModule

        assert isinstance(inner, FSDPModule)
        inner.set_requires_gradient_sync(on)


def autocast(settings: ParallelSettings, prepared: Prepared | None,
             device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for `bf16-mixed` (not under FSDP, whose policy casts already)."""
    if settings.precision == "bf16-mixed" and not (prepared is not None and prepared.sharded):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def state_of(prepared: Prepared | None, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """{"model", "optimizer"} state in strategy-independent keys; under FSDP as shards
    under SHARDED (the checkpoint writer saves each rank's part)."""
    module = prepared.inner if prepared is not None else model
    optimizers = (optimizer,) if optimizer is not None else ()
    model_state, optim_state = get_state_dict(module, optimizers)
    state = {"model": model_state, "optimizer": optim_state} if optimizer is not None else {"model": model_state}
    if prepared is not None and prepared.sharded:
        return {SHARDED: state}
    return state


def restore(prepared: Prepared | None, model: nn.Module, optimizer: torch.optim.Optimizer | None,
            checkpoint: dict[str, Any]) -> None:
    """Put a checkpoint's model and optimizer state back, full or sharded, saved under
    any strategy and world size (a sharded one is read with torch.distributed.checkpoint,
    which reshards)."""
    module = prepared.inner if prepared is not None else model
    optimizers = (optimizer,) if optimizer is not None else ()
    if SHARDED in checkpoint:
        import torch.distributed.checkpoint as dcp

        model_state, optim_state = get_state_dict(module, optimizers)
        state: dict[str, Any] = {"model": model_state}
        if optimizer is not None:
            state["optimizer"] = optim_state
        dcp.load(state, checkpoint_id=checkpoint[SHARDED])
        set_state_dict(module, optimizers, model_state_dict=state["model"],
                       optim_state_dict=state.get("optimizer", {}))
        return
    full = prepared is not None and prepared.sharded
    set_state_dict(module, optimizers, model_state_dict=checkpoint["model"],
                   optim_state_dict=checkpoint.get("optimizer", {}) if optimizer is not None else {},
                   options=StateDictOptions(full_state_dict=full))

