"""Benchmarks, each side by side with its baseline in one run, alternating A and B.

    .venv/bin/python scripts/bench.py [--pairs 5] [--repeats 2] [--only overhead,step,...] [--out bench.json]
                                      [--quick] [--ingest-gb 1.1]
                                      [--entry-timeout SECONDS] [--entry-timeout ENTRY=SECONDS ...]
                                      [--search-seeds 5] [--search-seed-base 5] [--search-tasks ...]
                                      [--search-methods random,default,rungs,optuna]

A thin runner: the entries are the modules of `benchmarks/` (benchmarks.entries), each
run in a process of its own (benchmarks.core.run_entries).

Interleaved pairs (--pairs, default 5; a recorded figure needs at least 5): step, dp,
ingest, stream, stream_s3 and tracking run their baseline and raysweep alternately,
once each per pair, and record each pair's ratio, the median ratio and its spread
(min-max, quartiles); the target is decided on the median (fewer than 5 pairs: not
decided). The other entries keep their own method (medians or best of --repeats,
seeds, peaks), as their tables say.

Entries (each names its baseline):
- overhead: trial start (Tune's on_trial_start on the driver) to the first training
  step, for one-worker and two-worker trials of raysweep sweeps, against Tune trials
  that call a bare Ray Train V2 TorchTrainer.fit() on the same trainer and data.
- step: steady-state time per training step of the raysweep plain trainer and of
  the Lightning path, against a hand-written PyTorch loop (same model, data, batch
  order, thread count; in-process, no Ray).
- dp: 2 workers through raysweep (Ray Train, DDP on gloo) against plain
  torch.distributed DDP on gloo in 2 spawned processes: set-up and steady state.
- ingest: rows/s and GB/s from >= 1 GB of generated Parquet to torch batches:
  raysweep's reader + shard iterator, against ParquetFile.iter_batches +
  torch.from_numpy, and against repeating one preallocated batch (upper bound).
- stream: the stream loader (rank 0 of 1) reading >= 1 GB of local Parquet, against
  pyarrow's dataset scanner with the same float32 conversion and thread count.
- stream_s3: the same on ~250 MB on a local SeaweedFS S3 server, against pyarrow's
  dataset scanner on the same s3:// objects.
- stream_ranks: 2 rank processes streaming their halves at once, against one
  streaming all (aggregate rows/s; 1 read thread each).
- stream_memory: peak RSS of a process streaming 4x a 512 MiB cap (decoded), against
  its RSS after imports; every row seen once.
- fingerprint: data_fingerprint's footer mode on 1,000 small files, local and on S3,
  against full mode (content hashes) locally.
- search: the default search against random search without early stopping and
  Optuna alone, every method at the same 128 epochs: epochs to a fixed target
  validation loss and the best one reached, several seeds, on four tasks (digits
  MLP, digits CNN, diabetes MLP regression, a 7-param digits MLP), each with its own
  fixed target (--search-tasks picks some, --search-seeds and --search-seed-base the
  seeds, --search-methods the methods).
- search_mo: the two-objective digits MLP sweep (val_loss, params_count; val_accuracy
  >= 0.9) with MultiObjectiveASHA against the same sweep without early stopping:
  hypervolume of the final Pareto front and epochs trained, several seeds.
- throughput: wall time of a sweep of trials of >= 10 s against the ideal (sum of
  the trials' own training time / concurrent trials).
- tracking: a trial's training time with raysweep's MLflow logging against the
  same trial with logging off.
- columns_memory, columns_transform, columns_padding: column shapes
  (benchmarks.columns): a uint8 image column's host bytes per row against
  its Arrow size; PNG decoding in the trainer's transform, 2 transform workers against
  1; padded token batches against hand-written pyarrow-to-torch pad loops.
Each entry is registered with its target (benchmarks.core); its JSON result
records "target" and "met". Prints the Markdown tables, writes JSON to --out (and the
tables to OUT.md), names the targets missed, and exits 1 when any was missed.
Every entry runs in its own process under a time limit (--entry-timeout; 1800 s unless
the entry has its own), enforced by this process: an entry past it, one that raises or
one whose process dies is a failed entry (met false, "error", "timed_out", and the
"stage" it was in, e.g. "plain DDP baseline" or "raysweep dp"), its process tree (its
Ray cluster too) is killed, and the next entry runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import entries  # noqa: E402
from benchmarks.core import DEFAULT_TIMEOUT_S, MIN_PAIRS, parse_time_limits, run_entries  # noqa: E402
from benchmarks.search import SEARCH_MEASURED, SEARCH_TASKS, search_methods  # noqa: E402

ENTRIES = entries.load_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=MIN_PAIRS,
                        help=f"interleaved baseline/raysweep pairs of the paired entries (a recorded figure: >= "
                        f"{MIN_PAIRS}; fewer: target not decided)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the entries without pairs")
    parser.add_argument("--only", default=",".join(ENTRIES), help="comma-separated entries: " + ",".join(ENTRIES))
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--ingest-gb", type=float, default=1.1)
    parser.add_argument("--quick", action="store_true",
                        help="smaller data for a smoke run (the stream entries and fingerprint)")
    parser.add_argument("--search-seeds", type=int, default=5, help="seeds per task (search) and per arm (search_mo)")
    parser.add_argument("--search-tasks", default=",".join(t.key for t in SEARCH_TASKS),
                        help="search entry: comma-separated tasks, each with its own fixed target: "
                        + ", ".join(f"{t.key} (val_loss <= {t.target_val_loss:g})" for t in SEARCH_TASKS))
    parser.add_argument("--search-seed-base", type=int, default=5,
                        help="search entry: the first seed (targets fixed on pilot seeds 100-109, the default "
                             "chosen on seeds 0-4; measured from 5)")
    parser.add_argument("--search-methods", default=SEARCH_MEASURED,
                        help="search entry: comma-separated methods: " + ", ".join(
                            f"{k} ({name})" for k, (name, _) in search_methods().items()))
    parser.add_argument("--entry-timeout", action="append", default=[], metavar="[ENTRY=]SECONDS",
                        help=f"time limit per entry: SECONDS for every entry without one of its own (default "
                        f"{DEFAULT_TIMEOUT_S:g}; dp: {ENTRIES['dp'].timeout_s:g}), ENTRY=SECONDS for one entry "
                        "(repeatable); 0: none. An entry past its limit is a failed entry (timed_out, with the "
                        "stage it was in), its process tree is killed, and the next entry runs")
    args = parser.parse_args()
    wanted = args.only.split(",")
    unknown = ENTRIES.unknown(wanted)
    if unknown:
        parser.error(f"--only: unknown entries {unknown}; known: {', '.join(ENTRIES)}")
    unknown_tasks = sorted(set(args.search_tasks.split(",")) - {t.key for t in SEARCH_TASKS})
    if unknown_tasks:
        parser.error(f"--search-tasks: unknown tasks {unknown_tasks}; known: {', '.join(t.key for t in SEARCH_TASKS)}")
    unknown_methods = sorted(set(args.search_methods.split(",")) - set(search_methods()))
    if unknown_methods:
        parser.error(f"--search-methods: unknown methods {unknown_methods}; known: {', '.join(search_methods())}")
    if args.pairs < 1:
        parser.error("--pairs: at least 1")
    try:
        default_limit, limits = parse_time_limits(args.entry_timeout, ENTRIES)
    except ValueError as exc:
        parser.error(f"--entry-timeout: {exc}")
    import torch

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    run_args = {k: v for k, v in vars(args).items() if k != "entry_timeout"}
    ok = run_entries(ENTRIES, wanted, entries.child(run_args), out=Path(args.out), header=[f"Machine: {machine}"],
                     meta={"machine": machine, "pairs": args.pairs}, timeout_s=default_limit, timeouts=limits)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
