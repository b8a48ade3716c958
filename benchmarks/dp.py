"""dp: 2 workers through raysweep (Ray Train, DDP on gloo) against plain torch.distributed DDP."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import PARAMS, Bench, digits_spec, scratch_dir, write_sets
from benchmarks.core import interleave, md_table, on_median, paired, spread_text
from benchmarks.entries import ENTRIES
from raysweep.data.arrays import ArraySet
from raysweep.data.shards import train_batch_indices
from raysweep.errors import one_line_cause
from trainers import digits_mlp

DDP_TIMEOUT_S = 300.0  # plain DDP baseline: the process group's timeout, and the parent's deadline for its ranks
DDP_FAILURES = ("raise", "exit", "sigint", "hang")  # what _ddp_process can plant on one rank (tests)


def _ddp_process(rank: int, world: int, port: int, path: str, epochs: int, launched: float, timeout_s: float,
                 fail: str = "", fail_rank: int = -1) -> None:
    """One rank of the plain-DDP baseline (run by torch's spawn._wrap).

    It joins the parent's c10d TCPStore at `port` as a client and rendezvouses through
    it (init_process_group(store=...), timeout `timeout_s`): no rank binds a port it
    was told, so none can lose one to another process. It writes where it is
    ("bench/stage/<rank>") and, last, its result ("bench/done/<rank>") to the store:
    the parent names each rank's last stage when something goes wrong, and tells a rank
    that finished from one that left early with exit code 0 (spawn._wrap exits 0 after
    a KeyboardInterrupt, i.e. a SIGINT). SIGUSR1 prints its stacks to stderr (the
    parent sends it to ranks past the deadline). It ends with os._exit(0), skipping
    the DDP model's teardown, which can deadlock (see the comment there).

    `fail` on rank `fail_rank`, for tests, plants an early exit before the rendezvous:
    "raise" (exit code 1), "exit" (code 0, nothing done), "sigint" (code 0, through
    SIGINT and spawn._wrap), "hang" (sleeps past any deadline).
    """
    import datetime
    import faulthandler
    import signal

    import torch.distributed as dist

    torch.set_num_threads(1)  # as a Ray Train worker with 1 CPU
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timeout)

    def progress(stage: str) -> None:
        store.set(f"bench/stage/{rank}", stage)

    if fail and rank == fail_rank:
        progress(f"planted failure {fail!r}")
        if fail == "raise":
            raise RuntimeError(f"planted failure on rank {rank}")
        if fail == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)
        if fail == "hang":
            time.sleep(3600)
        return
    progress("init_process_group")
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
    data = np.load(path)
    features, labels = data["features"], data["labels"]
    torch.manual_seed(0)
    progress("DDP set-up")
    model = torch.nn.parallel.DistributedDataParallel(digits_mlp.build_model(PARAMS))
    optimizer = digits_mlp.build_optimizer(model, PARAMS)
    loss_fn = torch.nn.CrossEntropyLoss()
    first, epoch_s = None, []
    for epoch in range(epochs):
        progress(f"epoch {epoch}")
        started = time.perf_counter()
        for rows in train_batch_indices(len(labels), rank, world, PARAMS["batch_size"], 0, epoch):
            x, y = torch.from_numpy(features[rows]), torch.from_numpy(labels[rows])
            first = first or time.time()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        epoch_s.append(time.perf_counter() - started)
    progress("done")
    assert first is not None
    store.set(f"bench/done/{rank}", json.dumps({"setup_s": first - launched, "epoch_s": epoch_s}))
    store.get(f"bench/done/{rank}")  # a round trip: the store holds the result before this process goes
    # Leave without destroy_process_group and without tearing the DDP model down: either can
    # deadlock (torch 2.13; both ranks stuck in destroy_process_group once in a loaded test
    # run). The DDP
    # Reducer holds the last reference to the ProcessGroupGloo; freeing the model when this
    # frame is cleared (the GIL held) runs ~ProcessGroupGloo, which locks the group's work
    # mutex, while a gloo worker thread (runLoop) holds that mutex as it drops the last
    # allreduce's AsyncWork, whose ThreadLocalState decrefs a Python object and waits for the
    # GIL (gdb: main thread ~Reducer -> ~ProcessGroupGloo -> pthread_mutex_lock; worker
    # ~AsyncAllreduceWork -> ~ThreadLocalState -> take_gil). 2 of 30 runs of the old baseline
    # hung so: one rank finished and exited 0 (torch's join counts that as success), the other
    # sat in spawn._wrap for good. Cf. pytorch/pytorch#56297 (blocking destructors and the GIL).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _store_text(store: Any, key: str) -> str | None:
    return store.get(key).decode() if store.check([key]) else None


def plain_ddp(train: ArraySet, epochs: int, tmp: Path, *, timeout_s: float = DDP_TIMEOUT_S, fail: str = "",
              fail_rank: int = 1, world: int = 2) -> dict[str, Any]:
    """Plain torch.distributed DDP on gloo in `world` spawned processes: rank 0's
    {"setup_s", "epoch_s"}.

    The rendezvous has no race for a port: this process binds 127.0.0.1 port 0 and
    keeps the socket, serves the c10d TCPStore on it as master (master_listen_fd), and
    the ranks join as clients (gloo binds port 0 for its own connections). The process
    group's timeout is `timeout_s`.

    Joins the ranks with a deadline (start_processes(join=False), join(timeout) in a
    loop) and raises a one-line RuntimeError naming the rank, its exit code or error
    and every rank's last stage, the other ranks killed, instead of waiting:
    - a rank exits with an error or a signal: at once (torch's join);
    - a rank exits with code 0 before it finished (SIGINT: spawn._wrap exits 0 on a
      KeyboardInterrupt, and torch's join counts that as success): at once;
    - ranks still running `timeout_s` after the launch: their stacks go to stderr
      (SIGUSR1, faulthandler), then they are killed.
    `fail`, `fail_rank`: a planted early exit (see _ddp_process), for tests.
    """
    import datetime
    import signal
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException, ProcessRaisedException

    if fail and fail not in DDP_FAILURES:
        raise ValueError(f"fail={fail!r}: one of {DDP_FAILURES}")
    path = tmp / "ddp.npz"
    np.savez(path, features=train.features, labels=train.labels)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4 * world)
    store = dist.TCPStore("127.0.0.1", listener.getsockname()[1], is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=timeout_s), master_listen_fd=listener.fileno())

    def stages() -> str:
        return ", ".join(f"rank {r} at {_store_text(store, f'bench/stage/{r}') or 'start'!r}" for r in range(world))

    launched = time.time()
    deadline = time.monotonic() + timeout_s
    ranks = mp.start_processes(_ddp_process, nprocs=world, join=False, start_method="spawn",
                               args=(world, store.port, str(path), epochs, launched, timeout_s, fail, fail_rank))
    try:
        while not ranks.join(timeout=0.5, grace_period=1.0):
            early = [r for r, p in enumerate(ranks.processes)
                     if p.exitcode == 0 and _store_text(store, f"bench/done/{r}") is None]
            if early:
                raise RuntimeError(
                    f"plain DDP: rank {early[0]} exited with code 0 before it finished (torch's spawn._wrap exits 0 "
                    f"after a KeyboardInterrupt, e.g. SIGINT); {stages()}; the other ranks killed")
            if time.monotonic() > deadline:
                alive = [r for r, p in enumerate(ranks.processes) if p.is_alive()]
                for r in alive:
                    os.kill(ranks.processes[r].pid, signal.SIGUSR1)  # their stacks to stderr
                time.sleep(1)
                raise RuntimeError(f"plain DDP: rank(s) {alive} still running {timeout_s:g} s after the launch; "
                                   f"{stages()}; killed (their stacks are on stderr)")
    except ProcessException as exc:
        process = ranks.processes[exc.error_index]
        cause = one_line_cause(str(exc)) if isinstance(exc, ProcessRaisedException) else str(exc)
        raise RuntimeError(f"plain DDP: rank {exc.error_index} (pid {exc.error_pid}, exit code {process.exitcode}) "
                           f"failed: {cause}; {stages()}; the other ranks killed") from None
    finally:
        for process in ranks.processes:
            if process.is_alive():
                process.kill()
        for process in ranks.processes:
            process.join(10)
        listener.close()
    return json.loads(_store_text(store, "bench/done/0") or "{}")


PLAIN = "plain DDP (gloo)"


def dp_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["path", "set-up s (median)", "ms/step (median)", "step ratio: median (min-max; IQR; pairs)"],
                      [[x["name"], x["setup_s"], x["ms_per_step"], spread_text(x["step_ratio"])
                        if isinstance(x["step_ratio"], dict) else x["step_ratio"]] for x in r["rows"]]),
            f"{r['model']}; {r['rows_train']} rows, {r['steps_per_epoch_per_rank']} steps/epoch/rank; "
            f"{r['pairs']} interleaved pairs (one {r['epochs']}-epoch run each, the order flipping every pair; "
            "steady state = median of the epochs after the first); step ratio = raysweep's step / plain DDP's in "
            "the same pair; the target is decided on the median.", ""]


@ENTRIES.register("dp", target="steady state within 1.05x of plain DDP (median of >= 5 interleaved pairs)",
                  table=dp_table, timeout_s=1200,
                  met=lambda r: on_median(next(x["step_ratio"] for x in r["rows"] if x["name"] == "raysweep"),
                                          lambda m: m <= 1.05))
def bench_dp(bench: Bench, tile: int = 8, epochs: int = 5) -> dict[str, Any]:
    import ray

    from raysweep.data.arrays import load_arrays
    from raysweep.data.files import resolve_data
    from raysweep.driver.plan import plan_from_spec
    from raysweep.driver.trainer import build_trainer
    from raysweep.worker.plan import ExecutionMode

    bench.ray()
    bench.stage("data and run plan")
    train, validation, pairs = bench.train, bench.validation, bench.args.pairs
    tmp = Path(scratch_dir(prefix="bench-dp-"))
    root = write_sets(tmp / "data", train, validation, tile)
    spec = digits_spec(root, tmp / "results", **{"scaling.num_workers": 2, "scheduler.max_epochs": epochs,
                                                 "checkpoint.num_to_keep": epochs})
    data = resolve_data(spec.data, "bench")
    tiled, tiled_validation = load_arrays(data)
    plan = plan_from_spec(spec, str(tmp / "results"), ray.put((tiled, tiled_validation)),
                          ExecutionMode.WORKER_GROUP).with_params(PARAMS)
    batches = len(train_batch_indices(len(tiled), 0, 2, PARAMS["batch_size"], 0, 0))
    setup: dict[str, list[float]] = {PLAIN: [], "raysweep": []}

    def plain(i: int) -> float:
        ddp = plain_ddp(tiled, epochs, tmp)
        setup[PLAIN].append(ddp["setup_s"])
        return statistics.median(ddp["epoch_s"][1:]) / batches

    def ours(i: int) -> float:
        started = time.time()
        result = build_trainer(plan, f"dp-{i}", callbacks=[]).fit()
        history = [m for m in result.metrics_dataframe.to_dict("records")]
        setup["raysweep"].append(result.metrics_dataframe["first_step_unix"].dropna().iloc[0] - started)
        return statistics.median(len(tiled) / r["samples_per_s"] / batches for r in history[1:])

    step = interleave(pairs, {PLAIN: plain, "raysweep": ours})
    rows = [{"name": name, "setup_s": statistics.median(setup[name]), "ms_per_step": statistics.median(v) * 1e3,
             "step_ratio": paired(v, step[PLAIN]), "samples_ms": [round(x * 1e3, 3) for x in v]}
            for name, v in step.items()]
    return {"entry": "dp", "baseline": PLAIN, "rows": rows, "rows_train": len(tiled), "epochs": epochs,
            "steps_per_epoch_per_rank": batches, "pairs": pairs,
            "model": "MLP 64-512-512-10, batch 64 per rank, 1 thread/worker"}
