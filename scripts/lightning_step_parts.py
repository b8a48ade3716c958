"""Where a Lightning step's time goes, beyond a hand-written loop (issue 17 item 9).

    .venv/bin/python scripts/lightning_step_parts.py [--rounds 9] [--epochs 12] [--out docs/lightning_step_parts.json]

The digits MLP of the `step` benchmark (64-512-512-10, batch 64, CPU), in one process,
rounds interleaved so that machine noise hits every variant alike; each variant's
figure is the median over rounds of its per-epoch median ms/step (first epoch left
out), against raysweep's plain trainer on the same batches:

- raysweep lightning: `trainers.digits_mlp_lightning` through raysweep's TrainContext;
- Lightning alone: the same module and batches through a bare Trainer (raysweep's share
  is the difference);
- without `self.log`: raysweep lightning with a training_step that logs nothing (what
  per-step logging costs);
- `_ResultMetric.to` skipped when its states are already on the device: Lightning calls
  it on every `self.log` and it walks the metric module's whole `__dict__` with
  `apply_to_collection` (a patch tried here only; raysweep does not ship it).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import PARAMS, bare_lightning, load_digits_sets  # noqa: E402

from raysweep.config.spec import LightningSpec  # noqa: E402
from raysweep.worker.context import TrainContext  # noqa: E402
from raysweep.worker.lightning import find_module_factory, fit  # noqa: E402
from trainers import digits_mlp, digits_mlp_lightning  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default="docs/lightning_step_parts.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for name in ("pytorch_lightning", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    train, validation = load_digits_sets(Path(tempfile.mkdtemp(prefix="lightning-parts-")))
    batches = -(-len(train) // PARAMS["batch_size"])

    def ms(reports: list[dict[str, Any]]) -> float:
        return statistics.median(len(train) / r["samples_per_s"] / batches * 1e3 for r in reports[1:])

    def plain() -> float:
        ctx, out = TrainContext.in_process(train, validation, PARAMS, num_epochs=args.epochs)
        digits_mlp.train(ctx)
        return ms([m for m, _ in out])

    def lightning() -> float:
        ctx, out = TrainContext.in_process(train, validation, PARAMS, num_epochs=args.epochs)
        fit(ctx, find_module_factory(digits_mlp_lightning), LightningSpec())
        return ms([m for m, _ in out])

    import bench

    def alone() -> float:
        bench.EPOCHS = args.epochs
        return ms(bare_lightning(train, PARAMS)[0])

    def without_log() -> float:
        original = digits_mlp_lightning.DigitsMLP.training_step

        def training_step(self: Any, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return self.loss_fn(self.model(x), y)

        digits_mlp_lightning.DigitsMLP.training_step = training_step  # type: ignore[method-assign]
        try:
            return lightning()
        finally:
            digits_mlp_lightning.DigitsMLP.training_step = original  # type: ignore[method-assign]

    def fast_result_to() -> float:
        from pytorch_lightning.trainer.connectors.logger_connector import result

        original = result._ResultMetric.to

        def to(self: Any, *a: Any, **k: Any) -> Any:
            if len(a) == 1 and not k and isinstance(a[0], torch.device):
                states = [v for v in self.__dict__.values() if isinstance(v, torch.Tensor)]
                states += list(self._defaults.values())
                if all(t.device == a[0] for t in states) and not (self._parameters or self._buffers or self._modules):
                    return self
            return original(self, *a, **k)

        result._ResultMetric.to = to
        try:
            return lightning()
        finally:
            result._ResultMetric.to = original

    variants = {"raysweep plain (baseline)": plain, "raysweep lightning": lightning,
                "Lightning alone (bare Trainer, same module and batches)": alone,
                "raysweep lightning, training_step without self.log": without_log,
                "raysweep lightning, _ResultMetric.to skipped when already on the device": fast_result_to}
    samples: dict[str, list[float]] = {k: [] for k in variants}
    started = time.perf_counter()
    for _ in range(args.rounds):
        for name, run in variants.items():
            samples[name].append(run())
    base = statistics.median(samples["raysweep plain (baseline)"])
    rows = [{"name": k, "ms_per_step": statistics.median(v), "added_ms_per_step": statistics.median(v) - base,
             "samples": [round(x, 4) for x in v]} for k, v in samples.items()]
    out = {"model": "MLP 64-512-512-10, batch 64, CPU", "threads": torch.get_num_threads(), "rounds": args.rounds,
           "epochs": args.epochs, "wall_s": round(time.perf_counter() - started, 1), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for row in rows:
        print(f"{row['ms_per_step']:7.3f} ms/step  {row['added_ms_per_step']:+.3f}  {row['name']}")
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
