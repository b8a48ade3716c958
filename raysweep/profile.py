"""Cluster profiles (`cluster/*.yaml`): where a run goes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from raysweep.errors import UserInputError
from raysweep.spec import _Section, describe_error, read_spec_file


class ClusterProfile(_Section):
    name: str
    address: str | None = None
    """None: start Ray in-process here; `host:port` or `auto`: join that cluster."""
    host: str = "127.0.0.1"
    """Bind address of a cluster started here."""
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)


DEFAULT_PROFILE = ClusterProfile(name="local")


def load_profile(path: str | Path | None) -> ClusterProfile:
    """The profile at `path` (validated like a spec), or the embedded local default."""
    if path is None:
        return DEFAULT_PROFILE
    from pydantic import ValidationError

    raw = read_spec_file(path, what="profile")
    try:
        return ClusterProfile.model_validate(raw)
    except ValidationError as exc:
        raise UserInputError(f"{path}: {describe_error(exc.errors()[0])}") from None
