"""Which Lightning namespace raysweep builds on: the one the user's LightningModule
subclasses (`lightning.pytorch` or `pytorch_lightning`), and Ray's pieces or
raysweep's equivalents of them for it. With both packages really installed:
tests/cluster/test_lightning_namespace_on_ray.py."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
import pytorch_lightning
import torch

from raysweep.cli import main
from raysweep.worker import lightning_compat
from raysweep.worker.lightning import find_module_factory, report_callback
from raysweep.worker.lightning_compat import namespace_of, ray_pieces


@pytest.fixture
def other_namespace(monkeypatch):
    """A stand-in `lightning.pytorch` with a LightningModule of its own (the real
    package is not in the test venv)."""
    fake = types.ModuleType("lightning.pytorch")
    fake.LightningModule = type("LightningModule", (torch.nn.Module,), {"__module__": "lightning.pytorch.core.module"})
    monkeypatch.setitem(sys.modules, "lightning.pytorch", fake)
    return fake


def test_the_namespace_is_the_one_the_module_subclasses(other_namespace) -> None:
    class Old(pytorch_lightning.LightningModule):
        pass

    class New(other_namespace.LightningModule):
        pass

    assert namespace_of(Old) is pytorch_lightning and namespace_of(Old()) is pytorch_lightning
    assert namespace_of(New) is other_namespace and namespace_of(New()) is other_namespace
    assert namespace_of(torch.nn.Linear(1, 1)) is None and namespace_of(object) is None


def test_a_module_of_the_other_namespace_is_found(other_namespace) -> None:
    module = types.ModuleType("user_trainer")

    class New(other_namespace.LightningModule):
        def __init__(self, hidden: int = 1) -> None:
            super().__init__()
            self.hidden = hidden

    New.__module__ = "user_trainer"
    module.New = New
    module.Base = other_namespace.LightningModule  # imported, not defined here: not a candidate
    factory = find_module_factory(module)
    assert factory is not None
    built = factory({"hidden": 3, "lr": 0.1})
    assert isinstance(built, New) and built.hidden == 3


def test_ray_pieces_are_rays_own_where_its_namespace_matches() -> None:
    from ray.train import lightning as ray_lightning

    pieces = ray_pieces(pytorch_lightning)  # only pytorch-lightning here: Ray's integration is built on it
    assert pieces.from_ray
    assert pieces.strategy is ray_lightning.RayDDPStrategy and pieces.prepare_trainer is ray_lightning.prepare_trainer


def _public(cls: type) -> set[str]:
    return {name for name in vars(cls) if not name.startswith("_")}


def test_the_equivalents_override_what_rays_classes_override() -> None:
    """raysweep's RayDDPStrategy/RayLightningEnvironment for the other namespace
    mirror Ray's: a Ray upgrade that overrides more shows up here."""
    from ray.train import lightning as ray_lightning

    mirror = lightning_compat._mirror(pytorch_lightning)
    assert not mirror.from_ray
    assert issubclass(mirror.strategy, pytorch_lightning.strategies.DDPStrategy)
    assert _public(mirror.strategy) == _public(ray_lightning.RayDDPStrategy)
    assert _public(mirror.environment) == _public(ray_lightning.RayLightningEnvironment)


@pytest.fixture
def ray_train_context(monkeypatch):
    """Ray Train's context and device as one worker of one sees them."""
    import ray.train
    import ray.train.torch

    context = types.SimpleNamespace(get_world_size=lambda: 1, get_world_rank=lambda: 0, get_local_rank=lambda: 0,
                                    get_node_rank=lambda: 0)
    monkeypatch.setattr(ray.train, "get_context", lambda: context)
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))


def test_the_equivalents_make_a_trainer_their_prepare_accepts(ray_train_context) -> None:
    mirror = lightning_compat._mirror(pytorch_lightning)
    common = dict(devices="auto", accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer = pytorch_lightning.Trainer(strategy=mirror.strategy(), plugins=[mirror.environment()], **common)
    assert mirror.prepare_trainer(trainer) is trainer
    assert (trainer.world_size, trainer.global_rank) == (1, 0)
    assert trainer.strategy.root_device == torch.device("cpu")
    plain = pytorch_lightning.Trainer(strategy="ddp", **common)
    with pytest.raises(RuntimeError, match="Invalid strategy class"):
        mirror.prepare_trainer(plain)


def test_the_report_callback_is_a_callback_of_the_modules_namespace() -> None:
    callback = report_callback(pytorch_lightning, ctx=None, loader=None)
    assert isinstance(callback, pytorch_lightning.Callback)
    assert type(callback).__name__ == "ReportCallback"


def test_build_module_that_returns_no_lightning_module(capsys, write_spec, tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "not_lightning.py").write_text(textwrap.dedent("""
        import torch
        def build_module(params):
            return torch.nn.Linear(3, 2)
    """))
    sys.modules.pop("not_lightning", None)
    assert main(["check", str(write_spec(trainer="not_lightning"))]) == 2
    err = capsys.readouterr().err.strip()
    assert "build_module(params) returned a Linear, not a LightningModule" in err and "\n" not in err
