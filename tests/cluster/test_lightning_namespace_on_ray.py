"""Lightning under both names at once (as on GPU images): with `lightning` and
`pytorch_lightning` both importable, Ray's `ray.train.lightning` is built on
`lightning.pytorch`, and a module written against either package must still train
in-process (and resume), pass `raysweep check` and `raysweep train` through a Ray
Train worker group (RayDDPStrategy), each on a Trainer of its own namespace.

The real `lightning` package (the installed pytorch-lightning's version, no
dependencies: it needs the same ones) is installed into a temporary folder from the
package index; the run happens in a subprocess with that folder on PYTHONPATH (its
own in-process cluster, whose workers inherit it). Skipped only when the index
cannot be reached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from raysweep.testing.helpers import experiment_runs

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = ("NewConnectionError", "ConnectTimeout", "Max retries exceeded", "Temporary failure in name resolution",
               "Network is unreachable", "Name or service not known", "ProxyError", "SSLError", "ConnectionError",
               "ReadTimeout")

MODULE = """
    import importlib

    import torch
    {import_line}

    NS = {ns}
    ENVIRONMENTS = importlib.import_module(NS.__name__ + ".plugins.environments")
    IN_PROCESS = False  # the driver sets it for its own in-process fit; a Ray worker imports afresh


    class Tiny(NS.LightningModule):
        def __init__(self, lr=0.05):
            super().__init__()
            self.lr = lr
            self.layer = torch.nn.Linear(64, 10)

        def on_fit_start(self):
            # the Trainer, its strategy and cluster environment are of the module's own namespace
            assert isinstance(self.trainer, NS.Trainer), type(self.trainer)
            if IN_PROCESS:
                assert isinstance(self.trainer.strategy, NS.strategies.SingleDeviceStrategy)
                return
            assert isinstance(self.trainer.strategy, NS.strategies.DDPStrategy), type(self.trainer.strategy)
            env = self.trainer.strategy.cluster_environment
            assert isinstance(env, ENVIRONMENTS.LightningEnvironment), type(env)
            assert env.world_size() == 1 and env.global_rank() == 0

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("val_loss", loss, on_epoch=True, batch_size=len(y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)
"""

DRIVER = """
    import importlib
    import sys
    import traceback

    import lightning.pytorch
    import numpy as np
    import pytorch_lightning
    import ray.train.lightning

    from raysweep.cli import main
    from raysweep.cluster.connect import connect, disconnect
    from raysweep.config.profile import ClusterProfile
    from raysweep.data.arrays import ArraySet
    from raysweep.worker.context import TrainContext
    from raysweep.worker.lightning import find_module_factory, fit
    from raysweep.worker.plan import LightningSettings

    assert lightning.pytorch.__file__.startswith(sys.argv[1]), lightning.pytorch.__file__
    assert issubclass(ray.train.lightning.RayDDPStrategy, lightning.pytorch.strategies.DDPStrategy)
    specs = sys.argv[2:]
    rng = np.random.default_rng(0)
    arrays = [ArraySet.from_matrix(rng.normal(size=(n, 64)).astype(np.float32), rng.integers(0, 10, n))
              for n in (256, 64)]
    codes = {}
    for spec in specs:  # in-process (a one-worker trial in its Tune trial): 1 epoch, then resume to 2
        module = importlib.import_module(spec.rsplit("/", 1)[-1][:-5])
        module.IN_PROCESS = True
        try:
            ctx, first = TrainContext.in_process(*arrays, params={"batch_size": 64}, num_epochs=1)
            fit(ctx, find_module_factory(module), LightningSettings())
            ctx, resumed = TrainContext.in_process(*arrays, params={"batch_size": 64}, num_epochs=2,
                                                   checkpoint=first[-1][1])
            fit(ctx, find_module_factory(module), LightningSettings())
            assert [m["epoch"] for m, _ in first + resumed] == [0, 1], (first, resumed)
            codes["in-process fit " + module.__name__] = 0
        except Exception:
            traceback.print_exc()
            codes["in-process fit " + module.__name__] = 1
    for spec in specs:  # preflight: the module is found and its training_step runs
        codes["check " + spec] = main(["check", spec])
    connect(ClusterProfile(name="both-lightnings", num_cpus=2))  # one cluster for both runs
    try:
        for spec in specs:
            codes["train " + spec] = main(["train", spec, "--name", spec.rsplit("/", 1)[-1][:-5]])
    finally:
        disconnect()
    print("exit codes:", codes, flush=True)
    sys.exit(1 if any(codes.values()) else 0)
"""


@pytest.fixture(scope="module")
def lightning_beside_pytorch_lightning(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the real `lightning` package, the same version as the
    installed pytorch-lightning."""
    import pytorch_lightning

    target = tmp_path_factory.mktemp("lightning-pkg")
    wanted = f"lightning=={pytorch_lightning.__version__}"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--quiet",
                           "--disable-pip-version-check", "--target", str(target), wanted],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        out = done.stdout + done.stderr
        if any(sign in out for sign in UNREACHABLE):
            pytest.skip(f"cannot reach the package index to install {wanted}: {out.strip().splitlines()[-1]}")
        raise AssertionError(f"pip install {wanted} failed:\n{out}")
    assert (target / "lightning" / "pytorch" / "__init__.py").is_file()
    return target


@pytest.fixture
def own_ray_tmpdir():
    """A Ray temp dir of its own for the subprocess' cluster (see test_faults.own_ray_tmpdir)."""
    path = tempfile.mkdtemp(prefix="rs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_modules_of_either_namespace_train_with_both_installed(lightning_beside_pytorch_lightning, digits_spec,
                                                                mlflow_uri, tmp_path, own_ray_tmpdir):
    modules = tmp_path / "modules"
    modules.mkdir()
    flavours = {"tiny_lightning_pytorch": ("import lightning.pytorch as L", "L"),
                "tiny_pytorch_lightning": ("import pytorch_lightning as pl", "pl")}
    specs = []
    for name, (import_line, ns) in flavours.items():
        (modules / f"{name}.py").write_text(textwrap.dedent(MODULE.format(import_line=import_line, ns=ns)))
        spec = digits_spec("digits_mlp.yaml", trainer=name, params={"batch_size": 128, "lr": 0.05},
                           space={}, scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 1},
                           scaling={"num_workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0})
        specs.append(str(spec.rename(tmp_path / f"{name}.yaml")))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "RAY_TMPDIR": own_ray_tmpdir,
           "PYTHONPATH": os.pathsep.join([str(lightning_beside_pytorch_lightning), str(modules),
                                          *filter(None, [os.environ.get("PYTHONPATH")]), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(DRIVER), str(lightning_beside_pytorch_lightning),
                           *specs], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
                          start_new_session=True)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    runs = experiment_runs(mlflow_uri, "digits-mlp")
    assert sorted(r.info.run_name for r in runs) == sorted(flavours)
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        assert {"train_loss", "val_loss"} <= set(run.data.metrics), run.info.run_name
