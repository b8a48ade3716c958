"""What a fresh Python process started by the suite sees and loads: the suite's own
HOME (tests/conftest.py `isolated_home`), and the light imports of the config
reference (`raysweep check --explain`) and of scripts/gpu_check.py (the GPU
machine has torch, numpy and pyarrow only). Their in-process tests:
tests/unit/test_isolation.py, test_explain.py, test_bench_registry.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("ray", "mlflow", "optuna", "pydantic")


def test_started_processes_inherit_it(isolated_home: Path) -> None:
    child = subprocess.run([sys.executable, "-c", "import pathlib; print(pathlib.Path.home())"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(isolated_home)


def test_explain_imports_no_ray_mlflow_or_torch() -> None:
    code = ("import sys, raysweep.config.explain; "
            "print(sorted(m for m in ('ray', 'mlflow', 'torch', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gpu_check_loads_no_ray_mlflow_optuna_or_pydantic(tmp_path: Path) -> None:
    """What the GPU machine (torch, numpy, pyarrow only) imports: gpu_check itself, which
    runs each entry in a process of its own (benchmarks.core.run_entries), and that
    entry's process (benchmarks.child, run here in a fresh process of its own with the
    job gpu_check's runner writes), for one entry run as `--device cpu --small` (the
    ingest one: the step one takes half a minute on a busy CPU)."""
    out = tmp_path / "g.json"
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['gpu_check.py', '--device', 'cpu', '--small', '--repeats', '1', '--only', 'gpu_ingest', "
        f"'--out', {str(out)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'scripts' / 'gpu_check.py')!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HEAVY []" in done.stdout, done.stdout[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["entry"] == "gpu_ingest" and result["met"] is None and result["target"]

    script = ROOT / "scripts" / "gpu_check.py"
    args = {"device": "cpu", "small": True, "out": str(out), "repeats": 1, "gather_threads": 2, "only": "gpu_ingest",
            "hidden": 64, "layers": 2, "batch": 64, "rows": 2048, "epochs": 3, "ingest_rows": 20000,
            "ingest_batch": 256}
    scratch = tmp_path / "s"
    scratch.mkdir()
    job = {"registry": f"{script}:ENTRIES", "context": f"{script}:make_check", "args": args, "entry": "gpu_ingest",
           "module": "__main__", "stage_file": str(tmp_path / "stages"), "result_file": str(tmp_path / "r.json"),
           "scratch": str(scratch), "sys_path": [str(ROOT)]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    child = ("import sys; from benchmarks.child import main\n"
             f"main({str(tmp_path / 'job.json')!r})\n"
             f"print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n")
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HEAVY []" in done.stdout, done.stdout[-3000:]
    assert json.loads((tmp_path / "r.json").read_text())["entry"] == "gpu_ingest"


def test_a_training_process_loads_nothing_of_the_driver() -> None:
    """What a training process imports (a sweep trial's function, a Train worker, a warm
    group's actors): no Optuna, MLflow, spec models, tracking or sweep code (Ray itself
    brings pydantic)."""
    worker_side = ("raysweep.driver.trial", "raysweep.worker.entry", "raysweep.worker.warm_group",
                   "raysweep.testing.probe")
    driver_only = ("optuna", "mlflow", "raysweep.config", "raysweep.tracking", "raysweep.driver.sweep",
                   "raysweep.run", "raysweep.cli")
    code = (f"import sys\nfor name in {worker_side!r}:\n    __import__(name)\n"
            f"print(sorted(m for m in sys.modules if m.startswith({driver_only!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-3000:]
