"""Support for `scripts/bench.py`'s strategy entries (issue 27), on CPU with gloo:

- fsdp_step: one FSDP2 training step through raysweep (trainers.digits_mlp on a
  TrainContext at scaling.strategy fsdp) against the same hand-written FSDP2 loop
  (the same model, shard units, optimizer and batches, `fully_shard` by hand), on 2
  torchrun-style processes (MASTER_ADDR/PORT, gloo). Both run in the same processes,
  alternating, so the machine's noise falls on both.
- fsdp_checkpoint: a sharded save and load of a 4-million-parameter model with its
  Adam state through raysweep (`ctx.state` -> `save_state`, with its shard digests;
  `open_state` checking them -> `ctx.restore`) against torch.distributed.checkpoint
  alone (`dcp.save` / `dcp.load` of get_state_dict's dicts), 2 ranks, alternating.
- compile_tokens: trainers.char_gpt's training tokens/s with scaling.compile default
  against off, one process on the text example (the first step's compile wait left
  out, as the trainer reports it).

Each `bench_*` takes the script's context (`args.repeats`) and returns its JSON
result; each `*_table` draws one as Markdown.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.core import md_table
from benchmarks.entries import ENTRIES

WORLD = 2
STEP_PARAMS: dict[str, Any] = {"batch_size": 64, "hidden": 512, "num_layers": 2, "lr": 0.01, "optimizer": "adam"}
STEP_TILE = 8  # the 1280 digits training rows repeated: 80 steps per epoch per rank
MIN_REPEATS = 3


def _init(rank: int, port: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)


def _spawn(fn: Any, *args: Any) -> dict[str, Any]:
    import torch.multiprocessing as mp

    from raysweep.testing.helpers import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        mp.spawn(fn, args=(free_port(), str(out), *args), nprocs=WORLD, join=True)
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def _leave(rank: int, out: str, result: dict[str, Any]) -> None:
    from raysweep.testing.ranks import leave_group

    if rank == 0:
        Path(out).write_text(json.dumps(result))
    leave_group()


# ---------------------------------------------------------------- fsdp_step


def _tiled_digits() -> tuple[Any, Any]:
    import numpy as np

    from raysweep.data.arrays import ArraySet
    from raysweep.testing.ranks import digits_splits

    train, validation = digits_splits()
    tiled = ArraySet.from_matrix(np.tile(train.features, (STEP_TILE, 1)), np.tile(train.labels, STEP_TILE))
    return tiled, validation


def _hand_epochs(rank: int, train: Any, epochs: int) -> tuple[list[float], list[float]]:
    """The hand-written FSDP2 loop: per-epoch step seconds and mean losses."""
    import torch
    from torch.distributed.fsdp import fully_shard

    from raysweep.data.shards import train_batch_indices
    from trainers.digits_mlp import build_model

    torch.manual_seed(0)
    model = build_model(STEP_PARAMS)
    for layer in model.children():
        if any(True for _ in layer.parameters()):
            fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=STEP_PARAMS["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    features, labels = torch.from_numpy(train.features), torch.from_numpy(train.labels)
    seconds, losses = [], []
    for epoch in range(epochs):
        batches = train_batch_indices(len(train), rank, WORLD, STEP_PARAMS["batch_size"], 0, epoch)
        started, total = time.perf_counter(), 0.0
        for idx in batches:
            index = torch.from_numpy(idx)
            loss = loss_fn(model(features[index]), labels[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach())
        seconds.append((time.perf_counter() - started) / len(batches))
        losses.append(total / len(batches))
    return seconds, losses


def _raysweep_epochs(rank: int, train: Any, validation: Any, epochs: int) -> list[float]:
    """trainers.digits_mlp through a TrainContext at strategy fsdp: per-epoch step
    seconds from its samples_per_s (its own timing of the step loop)."""
    from raysweep.data.shards import num_train_batches
    from raysweep.report import Report
    from raysweep.worker.context import TrainContext
    from raysweep.worker.parallel import ParallelSettings
    from trainers import digits_mlp

    reports: list[dict[str, float]] = []
    ctx = TrainContext(params=STEP_PARAMS, num_epochs=epochs, seed=0, train=train, validation=validation,
                       report_fn=lambda flat, _state: reports.append(Report.from_ray(flat).metrics),
                       rank=rank, world_size=WORLD, parallel=ParallelSettings("fsdp"))
    digits_mlp.train(ctx)
    batches = num_train_batches(len(train), WORLD, STEP_PARAMS["batch_size"])
    rows_per_epoch = batches * STEP_PARAMS["batch_size"] * WORLD
    return [rows_per_epoch / r["samples_per_s"] / batches for r in reports]


def _step_rank(rank: int, port: int, out: str, repeats: int, epochs: int) -> None:
    _init(rank, port)
    train, validation = _tiled_digits()
    hand: list[float] = []
    ours: list[float] = []
    hand_losses: list[float] = []
    for _ in range(repeats):
        seconds, hand_losses = _hand_epochs(rank, train, epochs)
        hand += seconds[1:]  # (the first epoch warms up)
        ours += _raysweep_epochs(rank, train, validation, epochs)[1:]
    _leave(rank, out, {"hand": hand, "raysweep": ours, "hand_losses": hand_losses})


def bench_step(bench: Any, epochs: int = 3) -> dict[str, Any]:
    repeats = max(int(bench.args.repeats), MIN_REPEATS)
    got = _spawn(_step_rank, repeats, epochs)
    base = statistics.median(got["hand"])
    rows = [{"name": name, "ms_per_step": statistics.median(got[key]) * 1e3,
             "ratio": statistics.median(got[key]) / base, "samples_ms": [round(s * 1e3, 3) for s in got[key]]}
            for name, key in (("hand-written FSDP2 loop", "hand"), ("raysweep, strategy fsdp", "raysweep"))]
    return {"entry": "fsdp_step", "baseline": "hand-written FSDP2 loop", "rows": rows, "world": WORLD,
            "model": "MLP 64-512-512-10 (trainers.digits_mlp), batch 64 per rank, Adam, 1 thread per rank, gloo",
            "steps_per_epoch_per_rank": 1280 * STEP_TILE // (64 * WORLD), "repeats": repeats}


def step_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["path", "ms/step", "ratio"], [[x["name"], x["ms_per_step"], x["ratio"]] for x in r["rows"]]),
            f"{r['model']}; {r['world']} ranks, {r['steps_per_epoch_per_rank']} steps/epoch/rank.", ""]


def step_met(r: dict[str, Any]) -> bool:
    return next(x["ratio"] for x in r["rows"] if x["name"].startswith("raysweep")) <= 1.05


# ---------------------------------------------------------------- fsdp_checkpoint


def _big_model() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)])


def _checkpoint_rank(rank: int, port: int, out: str, repeats: int, root: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from raysweep.testing.ranks import digits_splits
    from raysweep.worker.checkpoint import open_state, save_state
    from raysweep.worker.context import TrainContext
    from raysweep.worker.parallel import ParallelSettings

    _init(rank, port)
    train, validation = digits_splits()
    ctx = TrainContext(params={}, num_epochs=1, seed=0, train=train, validation=validation,
                       report_fn=lambda *_: None, rank=rank, world_size=WORLD, parallel=ParallelSettings("fsdp"))
    model = _big_model()
    ctx.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(8, 1024)).sum().backward()
    optimizer.step()
    times: dict[str, list[float]] = {"dcp save": [], "dcp load": [], "raysweep save": [], "raysweep load": []}

    def timed(name: str, fn: Any) -> None:
        dist.barrier()
        started = time.perf_counter()
        fn()
        dist.barrier()
        times[name].append(time.perf_counter() - started)

    for i in range(repeats):
        plain, ours = Path(root) / f"dcp-{i}", Path(root) / f"raysweep-{i}"

        def dcp_save(folder: Path = plain) -> None:
            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))

        def dcp_load(folder: Path = plain) -> None:
            model_state, optim_state = get_state_dict(model, optimizer)
            state: dict[str, Any] = {"model": model_state, "optimizer": optim_state}
            dcp.load(state, checkpoint_id=str(folder))
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

        def ours_save(folder: Path = ours) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            save_state({**ctx.state(model, optimizer), "epoch": 0}, folder)

        def ours_load(folder: Path = ours) -> None:
            ctx.checkpoint = open_state(folder)
            ctx.restore(model, optimizer)

        timed("dcp save", dcp_save)
        timed("raysweep save", ours_save)
        timed("dcp load", dcp_load)
        timed("raysweep load", ours_load)
    shard_bytes = sum(p.stat().st_size for p in (Path(root) / "dcp-0").glob("*.distcp"))
    _leave(rank, out, {**times, "shard_bytes": shard_bytes})


def bench_checkpoint(bench: Any) -> dict[str, Any]:
    repeats = max(int(bench.args.repeats), MIN_REPEATS)
    with tempfile.TemporaryDirectory() as root:
        got = _spawn(_checkpoint_rank, repeats, root)
    median = {k: statistics.median(v) for k, v in got.items() if isinstance(v, list)}
    rows = []
    for name in ("dcp", "raysweep"):
        total = median[f"{name} save"] + median[f"{name} load"]
        rows.append({"name": "torch.distributed.checkpoint alone" if name == "dcp" else "raysweep (with shard digests)",
                     "save_s": median[f"{name} save"], "load_s": median[f"{name} load"], "total_s": total,
                     "ratio": total / (median["dcp save"] + median["dcp load"]),
                     "samples_s": {k: [round(x, 4) for x in got[k]] for k in (f"{name} save", f"{name} load")}})
    return {"entry": "fsdp_checkpoint", "baseline": "torch.distributed.checkpoint alone", "rows": rows,
            "world": WORLD, "model": "4 x Linear(1024, 1024) (4.2 M parameters) + Adam state, sharded over 2 ranks",
            "checkpoint_mb": round(got["shard_bytes"] / 2**20, 1), "repeats": repeats}


def checkpoint_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["path", "save s", "load s", "ratio (save + load)"],
                      [[x["name"], x["save_s"], x["load_s"], x["ratio"]] for x in r["rows"]]),
            f"{r['model']}; {r['checkpoint_mb']} MB of shards on local disk.", ""]


def checkpoint_met(r: dict[str, Any]) -> bool:
    return next(x["ratio"] for x in r["rows"] if x["name"].startswith("raysweep")) <= 1.1


# ---------------------------------------------------------------- compile_tokens


def _text_splits(root: Path) -> tuple[Any, Any]:
    from raysweep.config.load import load_spec
    from raysweep.data.arrays import load_arrays
    from raysweep.data.examples import EXAMPLES
    from raysweep.data.files import resolve_data

    EXAMPLES["text"](root / "text")
    spec = load_spec("search_spaces/char_gpt.yaml", [f"data.train={root}/text/train",
                                                       f"data.validation={root}/text/validation"])
    return load_arrays(resolve_data(spec.data, "bench"))


def bench_compile(bench: Any, epochs: int = 3) -> dict[str, Any]:
    import torch

    from raysweep.report import Report
    from raysweep.worker.context import TrainContext
    from raysweep.worker.parallel import ParallelSettings
    from trainers import char_gpt

    repeats = max(int(bench.args.repeats), MIN_REPEATS)
    params = {"batch_size": 16, "d_model": 64, "n_layer": 2, "n_head": 4, "lr": 3e-3, "warmup_steps": 10}
    with tempfile.TemporaryDirectory() as root:
        train, validation = _text_splits(Path(root))
    samples: dict[str, list[float]] = {"false": [], "default": []}
    compile_s: list[float] = []
    losses: dict[str, list[float]] = {}
    for _ in range(repeats):
        for mode in ("false", "default"):
            torch.compiler.reset()
            reports: list[dict[str, float]] = []

            def keep(flat: dict[str, Any], _state: Any, out: list[dict[str, float]] = reports) -> None:
                out.append(Report.from_ray(flat).metrics)

            ctx = TrainContext(params=params, num_epochs=epochs, seed=0, train=train, validation=validation,
                               report_fn=keep, parallel=ParallelSettings(compile=mode))
            char_gpt.train(ctx)
            samples[mode] += [r["tokens_per_s"] for r in reports[1:]]
            losses[mode] = [round(r["train_loss"], 4) for r in reports]
            if mode == "default":
                compile_s.append(reports[0]["compile_s"])
    base = statistics.median(samples["false"])
    rows = [{"name": f"compile {mode}", "tokens_per_s": statistics.median(v), "ratio": statistics.median(v) / base,
             "samples": [round(x) for x in v], "train_losses": losses[mode]} for mode, v in samples.items()]
    return {"entry": "compile_tokens", "baseline": "compile false", "rows": rows,
            "compile_s": statistics.median(compile_s),
            "model": "trainers.char_gpt d_model 64, 2 layers, batch 16 x 96 tokens, 1 process",
            "threads": torch.get_num_threads(), "repeats": repeats, "epochs": epochs}


def compile_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["scaling.compile", "tokens/s", "ratio"],
                      [[x["name"], x["tokens_per_s"], x["ratio"]] for x in r["rows"]]),
            f"{r['model']}; compile wait {r['compile_s']:.1f} s (reported as compile_s, left out of tokens/s).", ""]


def compile_met(r: dict[str, Any]) -> bool:
    return next(x["ratio"] for x in r["rows"] if x["name"] == "compile default") >= 1.0


ENTRIES.register(
    "fsdp_step",
    method=(
        "not interleaved pairs: medians of the repeats, both loops in turn"
    ), target="raysweep's FSDP step <= 1.05x the same hand-written FSDP2 loop (2 gloo ranks)",
                 table=step_table, met=step_met, timeout_s=900)(bench_step)
ENTRIES.register(
    "fsdp_checkpoint",
    method=(
        "not interleaved pairs: medians of the repeats, both paths in turn"
    ), target="sharded save + load <= 1.1x torch.distributed.checkpoint alone",
                 table=checkpoint_table, met=checkpoint_met)(bench_checkpoint)
ENTRIES.register(
    "compile_tokens",
    method=(
        "not interleaved pairs: medians of the repeats, compile on and off in turn"
    ), target="char_gpt tokens/s with compile >= 1.0x without (CPU)",
                 table=compile_table, met=compile_met)(bench_compile)
