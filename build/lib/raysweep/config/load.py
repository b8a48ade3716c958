"""Reading a spec (or profile) file: YAML, `--set` overrides, one-line errors, paths.

Any error names the file and the dotted field path, states the rule and the value.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raysweep._ray_compat import set_base_dir
from raysweep.config.spec import Spec
from raysweep.errors import UserInputError


def base_dir() -> Path:
    """Where relative spec paths point: RAYSWEEP_BASE_DIR (set for submitted jobs,
    whose working dir is a copy without data or results), else the current dir."""
    return Path(os.environ.get("RAYSWEEP_BASE_DIR") or os.getcwd())


def resolve_path(path: str) -> str:
    """A local path made absolute against base_dir(); URIs are kept as they are."""
    if "://" in path or os.path.isabs(path):
        return path
    return str(base_dir() / path)


def leave_ray_working_dir(spec_path: str | None) -> str | None:
    """A Ray job's driver starts in the unpacked working dir, which Ray deletes and
    unpacks again when the last actor sharing it exits: the driver is then left in a
    deleted directory and Tune's os.getcwd() fails at the end of the sweep. Move to a
    stable directory; relative paths keep their meaning through RAYSWEEP_BASE_DIR.
    Returns the spec path made absolute (or as given, outside a job)."""
    cwd = os.getcwd()
    if "runtime_resources" not in Path(cwd).parts:
        return spec_path
    set_base_dir(cwd)
    base = os.environ["RAYSWEEP_BASE_DIR"]
    stable = base if os.path.isdir(base) and "runtime_resources" not in Path(base).parts else None
    os.chdir(stable or tempfile.gettempdir())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return str(Path(cwd) / spec_path) if spec_path else spec_path


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """`["a.b=3"]` -> `[(["a", "b"], 3)]`; values are parsed as YAML scalars."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserInputError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each `key.path=value` set (missing dicts created)."""
    result = copy.deepcopy(raw)
    for path, value in parse_overrides(overrides):
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return result


def describe_error(error: Mapping[str, Any]) -> str:
    # Pydantic puts the union tag (e.g. 'float') into the location; drop it.
    parts = [str(p) for p in error["loc"] if p not in ("float", "int", "categorical")]
    kind = error["type"]
    if not parts and kind == "value_error":  # a spec-wide rule names its own field
        return error["msg"].removeprefix("Value error, ")
    path = ".".join(parts) or "(top level)"
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind == "missing":
        return f"{path}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict):  # a section-level rule already names its values
        return f"{path}: {message}"
    return f"{path}: {message} (got {error['input']!r})"


def read_spec_file(path: str | Path, what: str = "spec") -> dict[str, Any]:
    """A YAML file as a dict, or a one-line UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {what} file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserInputError(f"{path}: YAML does not parse{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: expected a mapping of {what} fields, got {type(raw).__name__}")
    return raw


def validate_spec(raw: dict[str, Any], source: str) -> Spec:
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise UserInputError(f"{source}: {describe_error(exc.errors()[0])}") from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read, override and validate a spec file. Raises UserInputError."""
    raw = apply_overrides(read_spec_file(path), overrides or [])
    return validate_spec(raw, str(path))


def storage_root(storage_path: str, experiment: str) -> str:
    """The experiment's run folder: an absolute local path, or the URI as given."""
    if "://" in storage_path:
        return f"{storage_path.rstrip('/')}/{experiment}"
    return str(Path(resolve_path(storage_path)).resolve() / experiment)
