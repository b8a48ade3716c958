"""Warm worker groups (`scaling.worker_group: warm`): the workers of a sweep's
multi-worker trials outlive the trial.

A Ray Train worker group starts from nothing for every trial: a controller actor, a
placement group, fresh worker processes that import torch, a process group; about 10 s
on a laptop, most of a short trial. A warm group is built once per trial slot and kept:

- the trial is a Tune function trial like a one-worker one; its own process (which Tune
  reuses for the next trial of the same resources) is rank 0, and the trial's placement
  group has one bundle per worker (`resources`);
- ranks 1..N-1 are `GroupWorker` actors placed in bundles 1..N-1 of that placement
  group, and one torch process group (gloo on CPU, nccl on GPU) joins them all. Both are
  kept in the trial process (`_GROUP`) and used again by its next trial;
- each trial, rank 0 sends every worker the plan (with the trial's params) and the
  checkpoint to resume from, and all ranks run the trainer's `train(ctx)` as in a Ray
  Train worker group (same sharding, DDP, reports and mid-epoch checkpoints);
- rank 0 reports to Tune; after each report it broadcasts whether the trial goes on,
  so when the scheduler stops the trial (Tune ends rank 0's thread at its next report)
  every rank leaves `train` at the same point and the group stays usable;
- a failure anywhere fails the trial with the first failing rank's cause (its
  errors.Cause; Train's `[Rank r Error Snippet]` text when a process died): a worker that
  raises or dies has every worker killed, which breaks rank 0's pending collective; rank
  0's own error kills the workers too. The next trial builds a new group; Tune retries a
  failed trial from its checkpoint (`failure.max_failures`), as for one-worker trials.

Drain notices: every rank watches its own node (raysweep.worker.drain.NodeDrainWatch) and
the ranks agree on a notice as a Train worker group's do (raysweep.worker.preemption): a
just-in-time checkpoint, then no more batches until the node goes. A worker rank whose
node was taken away under the notice dies with Ray's `RayActorError(preempted=True)`;
rank 0 fails the trial with that very error, which Tune does not count against
`failure.max_failures` (as when rank 0's own node goes), and runs the trial again from
the checkpoint on a new group.

What a warm group does not have, against a Train worker group: Train's worker-level
restarts, and LightningModule trainers (they run on Train's Lightning integration;
`check` refuses them with `warm`).
"""

from __future__ import annotations

import datetime
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import ray
import torch
import torch.distributed as dist
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raysweep._upstream.torch_internals import abort_process_groups
from raysweep.errors import CAUSE_ATTR, Cause
from raysweep.worker.drain import NodeDrainWatch
from raysweep.worker.entry import _report, _state_of, _train, stored_checkpoint
from raysweep.worker.plan import RunPlan

PROCESS_GROUP_TIMEOUT_S = 1800.0
"""A collective that waits longer than this fails (torch's own default for gloo)."""
GO, STOP = 1.0, 0.0


class WarmGroupError(RuntimeError):
    """A rank of a warm group failed; the message is Train's form of the first failing
    rank's error (`[Rank r Error Snippet]:` and its traceback), and it carries that
    rank's Cause (errors.CAUSE_ATTR) when the trainer raised it."""


@dataclass(frozen=True)
class RankFailure:
    """How a rank failed: Train's text form, and the trainer's Cause (None: the process
    died, or something outside the trainer failed)."""

    text: str
    cause: Cause | None = None
    preempted: BaseException | None = None
    """The worker's RayActorError when its node was taken away under a drain notice."""

    @classmethod
    def of(cls, rank: int, exc: BaseException) -> RankFailure:
        return cls(_snippet(rank, traceback.format_exc()), getattr(exc, CAUSE_ATTR, None))

    def error(self) -> BaseException:
        """What the trial fails with: a preempted worker's own RayActorError (Tune counts
        no failure for it), else WarmGroupError."""
        if self.preempted is not None:
            return self.preempted
        error = WarmGroupError(self.text)
        if self.cause is not None:
            setattr(error, CAUSE_ATTR, self.cause)
        return error


class _Stopped(Exception):
    """Raised in ranks 1..N-1 when rank 0's trial was stopped by the scheduler."""


def _device(plan: RunPlan) -> torch.device:
    if plan.placement.use_gpu and torch.cuda.is_available():
        torch.cuda.set_device(0)  # (Ray gives each worker its own GPU as device 0)
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _backend(plan: RunPlan) -> str:
    return "nccl" if plan.placement.use_gpu and torch.cuda.is_available() else "gloo"


def _decision(value: float, device: torch.device) -> float:
    """Rank 0's GO/STOP after a report, broadcast to every rank."""
    flag = torch.tensor([value], dtype=torch.float32, device=device)
    dist.broadcast(flag, src=0)
    return float(flag.item())


def _snippet(rank: int, text: str) -> str:
    """Train's form of a rank's error (what errors.one_line_cause reads), on lines of its own."""
    return f"a worker of the warm group failed\n[Rank {rank} Error Snippet]:\n{text.rstrip()}"


def _leave() -> None:
    """Leave this process's process group, if it has one (a broken or aborted one too)."""
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # (an aborted group may refuse; a new one is made either way)
        pass


def _join(address: str, port: int, rank: int, world: int, backend: str) -> None:
    _leave()
    store = dist.TCPStore(address, port, None, is_master=False,
                          timeout=datetime.timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))


class GroupWorker:
    """Rank 1..N-1 of a warm group (a Ray actor in its trial's placement group)."""

    def join(self, address: str, port: int, rank: int, world: int, backend: str) -> None:
        """Join rank 0's process group (its TCP store at address:port)."""
        _join(address, port, rank, world, backend)

    def run(self, plan: RunPlan, checkpoint: dict[str, Any] | None, rank: int, world: int) -> RankFailure | None:
        """Train one trial as `rank`. Returns None when the trial ran to its end or was
        stopped, else how it failed."""
        device = _device(plan)

        def follow(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
            if _decision(GO, device) == STOP:
                raise _Stopped

        try:
            with NodeDrainWatch(ray.get_runtime_context().get_node_id()) as drain:
                _train(plan, follow, checkpoint, rank=rank, world_size=world, device=device,
                       preemption=drain.deadline)
        except _Stopped:
            return None
        except BaseException as exc:  # the trial fails with it: rank 0 is told through the result
            return RankFailure.of(rank, exc)
        return None


_GROUP: WarmGroup | None = None
"""This trial process's warm group (kept across the trials Tune runs in it)."""


class WarmGroup:
    """Rank 0's side: the worker actors and the process group of one trial slot."""

    def __init__(self, plan: RunPlan, placement: PlacementGroup) -> None:
        want = self.key = plan.placement  # (a later trial asking for other workers gets a new group)
        self.world, self.placement, self.broken = want.num_workers, placement, False
        custom = {k: v for k, v in want.worker_resources().items() if k not in ("CPU", "GPU")}
        resources = {"num_cpus": want.cpus_per_worker, "num_gpus": want.gpus_per_worker, "resources": custom}
        actor: Any = ray.remote(GroupWorker)
        self.workers: list[Any] = [actor.options(**resources, scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement, placement_group_bundle_index=rank)).remote() for rank in range(1, self.world)]
        address = ray.util.get_node_ip_address()
        _leave()  # (a broken group's, in this process)
        self.backend = _backend(plan)
        store = dist.TCPStore(address, 0, None, is_master=True, wait_for_workers=False,
                              timeout=datetime.timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))
        joined = [w.join.remote(address, store.port, rank, self.world, self.backend)
                  for rank, w in enumerate(self.workers, start=1)]
        try:
            dist.init_process_group(self.backend, store=store, rank=0, world_size=self.world,
                                    timeout=datetime.timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))
            ray.get(joined)
        except BaseException:
            self.close()
            raise
        self._store = store  # (kept alive: the group's rendezvous)

    def usable(self, plan: RunPlan, placement: PlacementGroup | None) -> bool:
        same = plan.placement == self.key
        return not self.broken and same and placement is not None and placement.id == self.placement.id

    def close(self, abort: bool = False) -> None:
        """Kill the workers: rank 0's pending gloo collective then fails (a peer's
        connection closed). `abort` (rank 0 may be waiting in one): an NCCL group is
        aborted too, as NCCL would otherwise wait for the dead peer until its timeout
        (not exercised here: no GPU in the test suite)."""
        self.broken = True
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
        if abort and self.backend == "nccl":
            try:
                abort_process_groups()
            except Exception:  # (an experimental torch API: the timeout still ends the wait)
                pass

    def train(self, plan: RunPlan, report: Any, checkpoint: dict[str, Any] | None,
              preemption: Any = None) -> None:
        """One trial on every rank; rank 0 (here) reports through `report` and watches
        drain notices for its node through `preemption`."""
        device = _device(plan)
        shared = ray.put(checkpoint)
        runs = {w.run.remote(plan, shared, rank, self.world): rank for rank, w in enumerate(self.workers, start=1)}
        failure: list[RankFailure] = []
        done = threading.Event()

        def watch() -> None:
            """A worker that fails (or dies) breaks the group, so that rank 0 stops waiting."""
            pending = list(runs)
            while pending and not done.is_set():
                finished, pending = ray.wait(pending, num_returns=1, timeout=0.2)
                bad = [out for out in self._results({ref: runs[ref] for ref in finished}) if out is not None]
                if bad:  # (the actor died: Ray's error holds its exit detail)
                    failure.append(bad[0])
                    self.close(abort=True)
                    return

        def lead(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
            try:
                report(metrics, state)  # (Tune ends this thread here when the trial is stopped)
            except BaseException:
                if not failure:
                    _decision(STOP, device)
                raise
            _decision(GO, device)

        watcher = threading.Thread(target=watch, name="raysweep-warm-group-watch", daemon=True)
        watcher.start()
        try:
            _train(plan, lead, checkpoint, rank=0, world_size=self.world, device=device, preemption=preemption,
                   peer_lost=lambda: bool(failure))
        except SystemExit:  # stopped by the scheduler: the workers were told, and leave train() too
            done.set()
            if failure or any(out is not None for out in self._results(runs)):
                self.close()
            raise
        except BaseException as exc:
            done.set()
            watcher.join(timeout=10)
            if failure:
                raise failure[0].error() from None
            self.close()  # rank 0's own error: the workers wait in a collective
            raise RankFailure.of(0, exc).error() from None
        done.set()
        watcher.join(timeout=10)
        bad = failure or [out for out in self._results(runs) if out is not None]
        if bad:
            self.close()
            raise bad[0].error()

    @staticmethod
    def _results(runs: dict[Any, int]) -> list[RankFailure | None]:
        """Each worker's outcome of the trial (a dead worker: Ray's error, as text)."""
        outs: list[RankFailure | None] = []
        for ref, rank in runs.items():
            try:
                outs.append(ray.get(ref, timeout=PROCESS_GROUP_TIMEOUT_S))
            except Exception as exc:
                preempted = exc if isinstance(exc, ray.exceptions.RayActorError) and exc.preempted else None
                outs.append(RankFailure(_snippet(rank, f"{type(exc).__name__}: {exc}"), preempted=preempted))
        return outs


def resources(plan: RunPlan) -> Any:
    """The Tune trial's placement group: one bundle per rank (bundle 0 is the trial's own
    process, rank 0), packed on as few nodes as fit."""
    from ray import tune

    bundle = {k: v for k, v in plan.placement.worker_resources().items() if v}
    return tune.PlacementGroupFactory([dict(bundle) for _ in range(plan.placement.num_workers)], strategy="PACK")


def train_in_warm_group(plan: RunPlan, resume_from: str | None = None) -> None:
    """ExecutionMode.WARM_GROUP: one trial on this trial process's warm group (built, or
    rebuilt after a failure or on other resources, as needed). `resume_from`: as in
    worker.train_in_trial."""
    from ray import tune  # (lazy: Train workers never load Tune)

    global _GROUP
    placement = ray.util.get_current_placement_group()
    if placement is None:
        raise RuntimeError("a warm-group trial runs in its Tune trial's placement group")
    if _GROUP is None or not _GROUP.usable(plan, placement):
        if _GROUP is not None:
            _GROUP.close()
        _GROUP = None
        _GROUP = WarmGroup(plan, placement)
    group = _GROUP
    try:
        with NodeDrainWatch(ray.get_runtime_context().get_node_id()) as drain:
            group.train(plan, lambda m, s: _report(tune.report, tune.Checkpoint, m, s),
                        _state_of(tune.get_checkpoint() or stored_checkpoint(resume_from)), preemption=drain.deadline)
    except SystemExit:
        raise
    except BaseException:
        group.close()
        raise
