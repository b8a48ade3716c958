"""The run record: what it takes to reproduce and explain a run.

Every `raysweep train` run and every sweep records, in MLflow (tags and the
`record.json` artifact) and next to its checkpoints (`record.json`): the resolved
spec (after --set), the git commit and whether the tree was dirty (the diff as an
artifact when it was), the exact versions of the stack, the cluster profile and the
resources actually used, the seeds, and a fingerprint of the input data (per Parquet
file: path, size, rows, content hash; plus a hash of the schema).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from raysweep.data.files import ResolvedData
from raysweep.tracking import tags as tag

RECORD_FILE = "record.json"
DIFF_FILE = "git.diff"
PACKAGES = ("ray", "torch", "pytorch-lightning", "optuna", "mlflow", "pyarrow", "numpy", "raysweep")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_state(repo: Path | None = None) -> tuple[dict[str, Any], str]:
    """({commit, dirty, branch}, diff against HEAD); commit None outside a git checkout."""
    cwd = str(repo or Path.cwd())

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "branch": None}, ""
    status = git("status", "--porcelain", "--untracked-files=no")
    diff = git("diff", "HEAD") if status.strip() else ""
    branch = git("rev-parse", "--abbrev-ref", "HEAD").strip()
    return {"commit": commit, "dirty": bool(status.strip()), "branch": branch}, diff


def file_fingerprint(path: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    meta = pq.ParquetFile(path).metadata
    return {"path": str(Path(path).resolve()), "size": Path(path).stat().st_size, "rows": meta.num_rows,
            "sha256": digest.hexdigest()}


def data_fingerprint(data: ResolvedData, mode: str = "full") -> dict[str, Any]:
    """Per file: path, size, rows, sha256; the schema's hash; one hash over it all."""
    files = {split: [file_fingerprint(f) for f in paths]
             for split, paths in (("train", data.train_files), ("validation", data.validation_files))}
    schema = pq.read_schema(data.train_files[0])
    schema_text = "\n".join(f"{name}: {schema.field(name).type}" for name in data.columns)
    fingerprint = {"files": files, "columns": list(data.columns),
                   "schema_sha256": hashlib.sha256(schema_text.encode()).hexdigest()}
    fingerprint["sha256"] = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    return fingerprint


def cluster_resources() -> dict[str, Any]:
    """The Ray cluster this run used: its nodes and total resources (if Ray is up)."""
    try:
        import ray

        if not ray.is_initialized():
            return {}
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return {"total": ray.cluster_resources(), "nodes": len(nodes)}
    except Exception as exc:  # the record should not fail a run
        return {"error": f"{type(exc).__name__}: {exc}"}


def build_record(kind: str, spec: Any, data: ResolvedData, spec_file: str, overrides: list[str],
                 profile: Any, run_name: str, fingerprint: str = "footer") -> tuple[dict[str, Any], str]:
    """The record of a run about to start, and the git diff (empty when clean)."""
    git, diff = git_state()
    record = {
        "kind": kind,
        "run_name": run_name,
        "spec_file": str(Path(spec_file).resolve()),
        "overrides": list(overrides),
        "spec": spec.model_dump(mode="json"),
        "git": git,
        "versions": versions(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "python": sys.version},
        "cluster": {"profile": profile.model_dump(mode="json"), "resources": cluster_resources(),
                    "scaling": spec.scaling.model_dump(mode="json")},
        "seeds": {"seed": spec.seed, "sampler_seed": spec.sampler.seed},
        "data": data_fingerprint(data, fingerprint),
    }
    return record, diff


def record_tags(record: dict[str, Any]) -> dict[str, Any]:
    """The searchable part of a record, as MLflow tags."""
    return {
        tag.GIT_COMMIT: record["git"]["commit"] or "none",
        tag.GIT_DIRTY: record["git"]["dirty"],
        tag.DATA_SHA256: record["data"]["sha256"],
        tag.DATA_SCHEMA_SHA256: record["data"]["schema_sha256"],
        tag.SEED: record["seeds"]["seed"],
        **{f"{tag.VERSION_PREFIX}{k}": v for k, v in record["versions"].items()},
    }


def save_record(record: dict[str, Any], diff: str, store: Any, run_id: str, folder: str | None) -> None:
    """Log the record to the MLflow run and write it next to the run's checkpoints."""
    text = json.dumps(record, indent=2, sort_keys=True)
    store.set_tags(run_id, record_tags(record))
    store.log_text(run_id, text, RECORD_FILE)
    if diff:
        store.log_text(run_id, diff, DIFF_FILE)
    if folder and "://" not in folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{RECORD_FILE}.tmp"
        tmp.write_text(text)
        tmp.replace(path / RECORD_FILE)
        if diff:
            (path / DIFF_FILE).write_text(diff)


def compare_data(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two data fingerprints, one phrase per difference."""
    problems = []
    if recorded["schema_sha256"] != current["schema_sha256"]:
        problems.append("the schema of the data changed")
    for split in ("train", "validation"):
        old = {f["path"]: f for f in recorded["files"][split]}
        new = {f["path"]: f for f in current["files"][split]}
        for path in sorted(old.keys() - new.keys()):
            problems.append(f"{path} is gone")
        for path in sorted(new.keys() - old.keys()):
            problems.append(f"{path} is new")
        for path in sorted(old.keys() & new.keys()):
            changed = [k for k in ("size", "rows", "sha256") if old[path][k] != new[path][k]]
            if changed:
                problems.append(f"{path} changed ({', '.join(changed)})")
    return problems


def compare_versions(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    return [f"{name} {recorded[name]} -> {current.get(name)}" for name in sorted(recorded)
            if name != "raysweep" and recorded[name] != current.get(name)]
