"""Every private Ray API and environment variable raysweep relies on still exists in
the installed Ray (no cluster started): a Ray upgrade that moves one fails here,
naming it, instead of inside a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray import tune

from raysweep import _ray_compat


def test_checked_against_the_installed_ray_version():
    assert ray.__version__ == _ray_compat.RAY_VERSION_CHECKED


@pytest.mark.parametrize("name", sorted(_ray_compat.RAY_ENV_DEFAULTS))
def test_ray_still_reads_each_environment_variable_raysweep_sets(name):
    source = Path(ray.__file__).parent
    readers = [p for p in source.rglob("*.py")
               if "rllib" not in p.parts and f'"{name}"' in p.read_text(errors="ignore")]
    assert readers, f"no module of Ray {ray.__version__} reads {name} any more"


def test_token_generator_and_token_config():
    from ray._raylet import Config  # type: ignore[attr-defined]

    token = _ray_compat.generate_token()
    assert isinstance(token, str) and len(token) >= 32 and token != _ray_compat.generate_token()
    assert callable(Config.initialize)


def test_cluster_address_writer_exists():
    from ray._private.utils import write_ray_address

    assert callable(write_ray_address)


def test_upload_walk_honours_gitignore(tmp_path):
    (tmp_path / ".gitignore").write_text("secret.txt\n")
    (tmp_path / "secret.txt").write_text("x")
    (tmp_path / "spec.yaml").write_text("name: x\n")
    seen: list[str] = []
    _ray_compat.walk_upload(tmp_path, lambda p: seen.append(p.name) if p.is_file() else None)
    assert "spec.yaml" in seen and "secret.txt" not in seen


def test_launcher_config_validation_rejects_a_broken_config():
    with pytest.raises(Exception, match="provider|cluster_name|required"):
        _ray_compat.validate_launcher_config({"cluster_name": "x"})


def test_tuner_keeps_its_run_config_where_replace_tuner_callbacks_looks():
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(callbacks=[]))
    marker = tune.Callback()
    _ray_compat.replace_tuner_callbacks(tuner, [marker])
    assert tuner._local_tuner._run_config.callbacks == [marker]


def test_tuner_keeps_its_searcher_where_replace_tuner_searcher_looks():
    from ray.tune.search import BasicVariantGenerator

    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator()))
    marker = BasicVariantGenerator()
    _ray_compat.replace_tuner_searcher(tuner, marker)
    assert tuner._local_tuner._tune_config.search_alg is marker
