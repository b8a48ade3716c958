"""The wheel's contents and the one version (scripts/wheel_check.sh builds and runs the
wheel itself; these are the fast checks of what it is built from)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

import raysweep
from raysweep.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_every_engine_folder_is_a_package_the_wheel_finds() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["raysweep", "raysweep.*"]
    folders = [p for p in (REPO / "raysweep").rglob("*") if p.is_dir() and p.name != "__pycache__"
               and any(p.glob("*.py"))]
    assert folders, "no subpackages found"
    missing = [str(p.relative_to(REPO)) for p in folders if not (p / "__init__.py").is_file()]
    assert not missing, f"folders of modules without __init__.py (left out of the wheel): {missing}"


def test_version_has_one_place(capsys: pytest.CaptureFixture[str]) -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "raysweep.__version__"}
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"raysweep {raysweep.__version__}"


def test_the_record_carries_the_version() -> None:
    from raysweep.tracking.record import versions

    assert versions()["raysweep"] == raysweep.__version__
