"""Cloud profiles (Ray cluster launcher configs): validated with Ray's schema, then
handed over to `ray up` / `ray down` / `ray exec`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from raysweep.config.load import read_spec_file
from raysweep.config.profile import is_launcher_config, validate_launcher_config


def is_cloud_profile(path: str) -> bool:
    """A Ray cluster launcher config (it has `provider` and `cluster_name`)."""
    return is_launcher_config(read_spec_file(path, what="profile"))


def launcher_command(action: str, profile_path: str) -> list[str]:
    """The `ray` command for `raysweep cluster ACTION PROFILE` (after validating the profile)."""
    validate_launcher_config(read_spec_file(profile_path, what="profile"), profile_path)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    verbs = {"up": ["up", "-y"], "down": ["down", "-y"], "status": ["exec"]}
    return [ray_cli, *verbs[action], profile_path] + (["ray status"] if action == "status" else [])


def launch(command: list[str]) -> bool:
    """Run the `ray` command; True on success."""
    return subprocess.run(command).returncode == 0
