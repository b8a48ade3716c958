"""scaling.strategy, accumulate_steps and compile (issue 27) on CPU with gloo: the
digits MLP trainer (trainers/digits_mlp.py) on 1, 2 and 4 torch processes
(raysweep.testing.ranks, what a Ray Train worker group runs, without Ray) and through
`raysweep train` on the shared Ray cluster.

Every comparison is at the same global batch (64 rows per optimizer step) on the same
rows, so one process, DDP and FSDP compute the same steps up to float rounding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raysweep.cli import main
from raysweep.testing.helpers import only_run
from raysweep.testing.ranks import RankRun, run_ranks, split_reports
from raysweep.worker.parallel import ParallelSettings

KEYS = ("train_loss", "val_loss", "val_accuracy")
PARAMS_COUNT = 4810  # digits_mlp at hidden 64: 64*64 + 64 + 64*10 + 10


def _close(got: list[dict[str, float]], want: list[dict[str, float]], keys=KEYS, rel: float = 1e-4) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want, strict=True):
        for key in keys:
            assert math.isclose(g[key], w[key], rel_tol=rel, abs_tol=1e-6), (key, g["epoch"], g[key], w[key])


class Runs:
    """run_ranks results, each run once per module."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.done = folder, {}

    def __call__(self, world: int, batch: int, **settings: Any) -> tuple[list[dict[str, float]], float]:
        save = settings.pop("save", False)
        params = {"batch_size": batch, **settings.pop("params", {})}
        key = (world, tuple(sorted(params.items())), tuple(sorted(settings.items())), save)
        if key not in self.done:
            run = RankRun(world, ParallelSettings(**settings), params,
                          save_to=str(self.folder / f"{len(self.done)}") if save else None)
            self.done[key] = (split_reports(run_ranks(run)), run.save_to)
        return self.done[key][0]

    def saved(self, world: int, batch: int, **settings: Any) -> Path:
        self(world, batch, save=True, **settings)
        return Path(self.done[(world, (("batch_size", batch),), tuple(sorted(settings.items())), True)][1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("world", [2, 4])
def test_fsdp_ddp_and_one_process_give_the_same_loss_curve(runs, world) -> None:
    one, held_one = runs(1, 64)
    ddp, held_ddp = runs(world, 64 // world)
    fsdp, held_fsdp = runs(world, 64 // world, strategy="fsdp", save=True)
    _close(ddp, one)
    _close(fsdp, one)
    _close(fsdp, ddp, rel=1e-5)
    assert one[-1]["val_accuracy"] > 0.8  # (it learned: the curves compared are not flat)
    # DDP keeps every weight on every rank; FSDP 1/N of them (a little more: shards are
    # padded up per tensor).
    assert held_one == held_ddp == PARAMS_COUNT
    assert PARAMS_COUNT / world <= held_fsdp <= PARAMS_COUNT / world * 1.05


def test_accumulated_micro_batches_step_as_the_larger_batch(runs) -> None:
    """With SGD, whose step scales with the gradient (Adam's would hide a gradient
    summed rather than averaged over the micro-batches)."""
    sgd = {"optimizer": "sgd", "lr": 0.05}
    one, _ = runs(1, 64, params=sgd)
    accumulated, _ = runs(1, 32, accumulate_steps=2, params=sgd)
    _close(accumulated, one, rel=1e-3)
    fsdp, _ = runs(2, 32, strategy="fsdp", params=sgd)
    fsdp_accumulated, _ = runs(2, 16, strategy="fsdp", accumulate_steps=2, params=sgd)
    _close(fsdp_accumulated, fsdp, rel=1e-3)
    _close(fsdp, one, rel=1e-3)
    small, _ = runs(1, 32, params=sgd)  # without accumulation, twice the steps: another curve
    assert not math.isclose(small[0]["train_loss"], one[0]["train_loss"], rel_tol=1e-2)


def test_a_sharded_checkpoint_resumes_on_another_world_size(runs) -> None:
    """4 ranks save their shards after epoch 0; 2 ranks, and one process, resume from
    them and train epoch 1 as the uninterrupted 4-rank run did."""
    four, _ = runs(4, 16, strategy="fsdp", save=True)
    saved = runs.saved(4, 16, strategy="fsdp") / "epoch-0"
    assert sorted(p.name for p in saved.glob("shards-*.sha256")) == [f"shards-{r}.sha256" for r in range(4)]
    on_two, _ = split_reports(run_ranks(RankRun(2, ParallelSettings("fsdp"), {"batch_size": 32},
                                                resume_from=str(saved))))
    _close(on_two, four[1:])
    on_one, _ = split_reports(run_ranks(RankRun(1, ParallelSettings(), {"batch_size": 64},
                                                resume_from=str(saved))))
    _close(on_one, four[1:])


def test_a_mid_epoch_sharded_checkpoint_resumes_at_its_cursor(tmp_path) -> None:
    """checkpoint.every_n_steps under FSDP: 2 ranks save shards with the cursor every 4
    steps; 4 ranks resume at batch 8 of epoch 0 and end the epoch where an
    uninterrupted run does (validation after the epoch; the train loss covers only the
    batches run after the resume)."""
    whole, _ = split_reports(run_ranks(RankRun(2, ParallelSettings("fsdp"), {"batch_size": 32}, num_epochs=1,
                                               save_to=str(tmp_path), every_n_steps=4)))
    cursor = tmp_path / "epoch-0-step-8"
    assert (cursor / "shards-1.sha256").is_file()
    resumed, _ = split_reports(run_ranks(RankRun(4, ParallelSettings("fsdp"), {"batch_size": 16}, num_epochs=1,
                                                 resume_from=str(cursor))))
    _close(resumed, whole, keys=("val_loss", "val_accuracy"))


def test_compile_on_gives_the_same_metrics_and_reports_its_time(runs, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # (not /tmp/torchinductor_USER)
    one, _ = runs(1, 64)
    compiled, _ = runs(1, 64, compile="default")
    _close(compiled, one, rel=1e-3)
    assert compiled[0]["compile_s"] > 0 and "compile_s" not in one[0]


def test_an_fsdp_train_run_saves_shards_through_ray_and_resumes_from_them(ray_cluster, mlflow_uri, write_spec,
                                                                           tmp_path) -> None:
    """Through `raysweep train` on Ray Train: each worker uploads its own shards and Ray
    merges them into one checkpoint; a second run (more epochs) resumes from it, at the
    next epoch, every row once per epoch across the two ranks."""
    spec = write_spec(scaling={"num_workers": 2, "cpus_per_worker": 0.5, "strategy": "fsdp"})
    assert main(["train", str(spec), "--set", "scheduler.max_epochs=1"]) == 0
    run = only_run(mlflow_uri)
    checkpoint = Path(run.data.tags["raysweep.checkpoint"])
    assert {"shards-0.sha256", "shards-1.sha256", ".metadata", "state.pt"} <= {p.name for p in checkpoint.iterdir()}
    assert main(["train", str(spec), "--set", "scheduler.max_epochs=2"]) == 0
    probe = tmp_path / "probe"
    steps = [line.split() for line in (probe / "steps-rank0.log").read_text().splitlines()]
    pids_by_epoch = {epoch: {pid for pid, e, *_ in steps if e == epoch} for epoch in ("0", "1")}
    assert pids_by_epoch["0"].isdisjoint(pids_by_epoch["1"])  # (epoch 1 ran in the second run only)
    rows = {e: np.sort(np.concatenate([np.load(probe / f"train-rank{r}-epoch{e}.npy") for r in (0, 1)]))
            for e in (0, 1)}
    assert (np.diff(rows[1]) > 0).all() and np.array_equal(rows[0], rows[1])
