"""raysweep end to end on a GPU machine, through Ray (issue 17, item 7): a PASS/FAIL table.

    python scripts/gpu_e2e.py [--out gpu_e2e.json] [--budget 480]     # on a machine with a CUDA GPU
    python scripts/gpu_e2e.py --cpu                                    # the same steps without a GPU

Every step is the CLI a user runs (`python -m raysweep ...`) in a fresh work folder
(data written by scripts/prepare_data.py, an SQLite MLflow store, HOME inside it), each
under its own time limit; the table says what each step expects and what it got:

1. check: `check` on the MLP spec;
2. train: a one-GPU `raysweep train` (a Ray Train worker group), 3 epochs;
3. packed sweep: 8 MLP trials at 0.25 GPU each (4 at a time on one GPU), bf16 autocast;
4. Lightning sweep: the Lightning CNN, 2 one-worker trials at 0.5 GPU each, bf16-mixed,
   each on a Ray Train worker group (`worker_group: always`), so through Ray's Lightning
   integration (its strategy from the namespace it uses, `lightning` or `pytorch_lightning`);
5. 2-worker sweep: with 2+ GPUs, DDP over NCCL at 1 GPU per worker (Train worker
   groups); with one GPU, 0.5 GPU per worker must be refused by `check` (exit 2 naming
   `scaling.gpus_per_worker`: two NCCL ranks of one run on one GPU);
6. warm-group sweep: with 2+ GPUs, the same on `scaling.worker_group: warm`; else skipped;
7. gpu_check: scripts/gpu_check.py (no Ray: step time and the feed into GPU memory).

Needs what raysweep needs (Ray, Optuna, MLflow, pydantic; on an offline machine carry them
as ../shared/gpu/README.md says and put them on PYTHONPATH). `--cpu` sets every
gpus_per_worker to 0 (step 5 still expects the refusal; step 6 runs on CPU) and runs
gpu_check with `--device cpu --small`. Writes the table as JSON to --out and exits 1
when a step did not get what it expected.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    name: str
    expect: str
    status: str = "NOT RUN"
    rc: int | None = None
    seconds: float = 0.0
    detail: str = ""


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_e2e.json")
    parser.add_argument("--cpu", action="store_true", help="rehearse without a GPU")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps together")
    parser.add_argument("--work", default=None, help="work folder (default: a new temporary one)")
    args = parser.parse_args()
    gpus = 0 if args.cpu else gpu_count()
    if not args.cpu and gpus == 0:
        print("no CUDA GPU here: run with --cpu to rehearse the steps")
        sys.exit(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="raysweep-gpu-e2e-")).resolve()
    (work / "home").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(work / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "MPLBACKEND": "Agg"}
    one, quarter, half = ("0", "0", "0") if args.cpu else ("1", "0.25", "0.5")
    mlp, cnn = str(REPO / "search_spaces/digits_mlp.yaml"), str(REPO / "search_spaces/digits_cnn.yaml")
    raysweep = [sys.executable, "-m", "raysweep"]
    started = time.monotonic()
    steps: list[Step] = []

    def run(name: str, expect: str, argv: list[str], limit: float, want_rc: int = 0, want_text: str = "") -> None:
        step = Step(name, expect)
        steps.append(step)
        left = args.budget - (time.monotonic() - started)
        if left < 20:
            step.status, step.detail = "SKIPPED", "time budget spent"
            return
        print(f"=== {name}: {' '.join(argv[2:] if argv[:2] == raysweep[:2] else argv)}", flush=True)
        t0 = time.monotonic()
        try:
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=min(limit, left))
            step.rc, text = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            step.rc, text = None, (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
                else (exc.stdout or "")
            step.status = "TIMEOUT"
        step.seconds = round(time.monotonic() - t0, 1)
        (work / f"{name}.log").write_text(text)
        print(text[-1500:], flush=True)
        if step.status != "TIMEOUT":
            ok = step.rc == want_rc and (not want_text or want_text in text)
            step.status = "PASS" if ok else "FAIL"
        lines = [line for line in text.splitlines() if line.strip()]
        step.detail = lines[-1][:300] if lines else ""

    def skip(name: str, expect: str, why: str) -> None:
        steps.append(Step(name, expect, status="SKIPPED", detail=why))

    run("prepare data", "digits written", [sys.executable, str(REPO / "scripts/prepare_data.py"),
                                           "--out", "data/digits"], 60)
    run("check", "exit 0", [*raysweep, "check", mlp], 90)
    run("train, 1 GPU", "exit 0", [*raysweep, "train", mlp, "--set", f"scaling.gpus_per_worker={one}",
                                   "--set", "scheduler.max_epochs=3"], 180)
    run("packed sweep, 8 trials at 0.25 GPU", "exit 0",
        [*raysweep, "tune", mlp, "--set", f"scaling.gpus_per_worker={quarter}", "--set", "budget.num_trials=8",
         "--set", "params.precision=bf16-mixed"], 180)
    run("Lightning sweep, 2 trials at 0.5 GPU (Train groups)", "exit 0",
        [*raysweep, "tune", cnn, "--set", "scaling.num_workers=1", "--set", f"scaling.gpus_per_worker={half}",
         "--set", "scaling.worker_group=always", "--set", "budget.num_trials=2",
         "--set", "lightning.precision=bf16-mixed"], 240)
    if gpus >= 2:
        run("2-worker sweep, 1 GPU per worker", "exit 0",
            [*raysweep, "tune", mlp, "--set", "scaling.num_workers=2", "--set", "scaling.gpus_per_worker=1",
             "--set", "budget.num_trials=2"], 240)
        run("warm-group sweep, 2 workers, 1 GPU each", "exit 0",
            [*raysweep, "tune", mlp, "--set", "scaling.num_workers=2", "--set", "scaling.gpus_per_worker=1",
             "--set", "scaling.worker_group=warm", "--set", "budget.num_trials=4"], 240)
    else:
        run("2 workers at 0.5 GPU refused", "exit 2 naming scaling.gpus_per_worker",
            [*raysweep, "check", mlp, "--set", "scaling.num_workers=2", "--set", "scaling.gpus_per_worker=0.5"],
            90, want_rc=2, want_text="scaling.gpus_per_worker")
        if args.cpu:
            run("warm-group sweep, 2 workers (CPU)", "exit 0",
                [*raysweep, "tune", mlp, "--set", "scaling.num_workers=2", "--set", "scaling.cpus_per_worker=0.5",
                 "--set", "scaling.worker_group=warm", "--set", "budget.num_trials=4"], 240)
        else:
            skip("warm-group sweep, 2 workers", "exit 0", f"needs 2 GPUs; this machine has {gpus}")
    gpu_check = [sys.executable, str(REPO / "scripts/gpu_check.py"), "--out", str(work / "gpu_check.json")]
    run("gpu_check (no Ray)", "exit 0 (its targets met)",
        gpu_check + (["--device", "cpu", "--small"] if args.cpu else []), 420)

    width = max(len(s.name) for s in steps)
    print(f"\n{'step':{width}}  {'status':8}  {'rc':>4}  {'s':>6}  expected")
    for s in steps:
        print(f"{s.name:{width}}  {s.status:8}  {'-' if s.rc is None else s.rc:>4}  {s.seconds:>6}  {s.expect}")
    out = {"gpus": gpus, "cpu_rehearsal": args.cpu, "work": str(work), "python": sys.version.split()[0],
           "wall_s": round(time.monotonic() - started, 1), "steps": [asdict(s) for s in steps]}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"JSON: {args.out}")
    sys.exit(0 if all(s.status in ("PASS", "SKIPPED") for s in steps) else 1)


if __name__ == "__main__":
    main()
