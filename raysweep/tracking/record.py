"""The run record: what it takes to reproduce and explain a run.

Every `raysweep train` run and every sweep records, in MLflow (tags and the
`record.json` artifact) and next to its checkpoints (`record.json`): the resolved
spec (after --set), the git commit and whether the tree was dirty (the diff as an
artifact when it was), the exact versions of the stack, the cluster profile and the
resources actually used, the seeds, and a fingerprint of the input data (per Parquet
file: path, size, rows, footer hash and mtime or ETag, or in mode "full" a hash of
every byte; plus a hash of the schema: see `data_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import raysweep
from raysweep.cluster.secrets import scrub_diff
from raysweep.data.files import FOOTER_THREADS, ResolvedData
from raysweep.data.storage import filesystem, is_object_store
from raysweep.errors import UserInputError
from raysweep.tracking import tags as tag

RECORD_FILE = "record.json"
DIFF_FILE = "git.diff"
PACKAGES = ("ray", "torch", "pytorch-lightning", "lightning", "optuna", "mlflow", "pyarrow", "numpy")


def versions() -> dict[str, str]:
    """Python's and the stack's versions; raysweep's from its one place (`raysweep.__version__`),
    which an editable checkout's stale install metadata cannot contradict."""
    found = {"python": platform.python_version(), "raysweep": raysweep.__version__}
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
    diff = scrub_diff(git("diff", "HEAD")) if status.strip() else ""  # (no secret file's lines in MLflow)
    branch = git("rev-parse", "--abbrev-ref", "HEAD").strip()
    return {"commit": commit, "dirty": bool(status.strip()), "branch": branch}, diff


MODES = ("footer", "full")
TAIL_READ, BLOCK, MAGIC = 64 * 1024, 8 * 1024 * 1024, b"PAR1"  # TAIL_READ: one read covers nearly every footer
# Object metadata keys, as the store names them (compared without case): S3 'ETag',
# 'VersionId' / 'x-amz-version-id' (versioned bucket), 'Last-Modified'; GCS 'etag', 'generation', 'updated'.
VERSION_KEYS = ("versionid", "x-amz-version-id", "version-id", "generation")
MTIME_KEYS = ("last-modified", "updated")


def _iso(moment: datetime | str | None) -> str | None:
    """UTC, ISO 8601 (a store's time that is not ISO text stays as it is)."""
    try:
        when = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    except ValueError:
        return str(moment)
    if when is None:
        return None
    utc = when.replace(tzinfo=when.tzinfo or timezone.utc).astimezone(timezone.utc)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _store_identity(metadata: Any) -> dict[str, str]:
    """ETag, version id and mtime out of an object's metadata; nothing else of it."""
    found = {}
    for key, value in (metadata.items() if metadata is not None else ()):
        name = (key.decode() if isinstance(key, bytes) else str(key)).lower()
        text = (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).strip()
        if not text:
            continue
        if name == "etag":
            found["etag"] = text.removeprefix("W/").strip('"')
        elif name in VERSION_KEYS and text != "null":
            found.setdefault("version", text)
        elif name in MTIME_KEYS:
            found.setdefault("mtime", _iso(text) or text)
    return found


def public_uri(uri: str) -> str:
    """The URI without any user:secret@ part (never in a record)."""
    if not is_object_store(uri):
        return uri
    scheme, rest = uri.split("://", 1)
    bucket, slash, key = rest.partition("/")
    return f"{scheme}://{bucket.rsplit('@', 1)[-1]}{slash}{key}"


def footer_bytes(handle: Any, size: int) -> bytes:
    """The Parquet footer, its 4-byte length and the magic (the file's last length + 8
    bytes): one seek and one read of the tail (a second for a footer over TAIL_READ)."""
    tail_size = min(size, TAIL_READ)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    if size < 12 or tail[-4:] != MAGIC:
        raise ValueError("no Parquet footer (the file does not end in PAR1)")
    length = struct.unpack("<I", tail[-8:-4])[0]
    if length + 12 > size:
        raise ValueError(f"footer length {length} exceeds the file's {size} bytes")
    if length + 8 > len(tail):
        handle.seek(size - length - 8)
        tail = handle.read(length + 8)
    return bytes(tail[-(length + 8):])


def _fingerprint(uri: str, mode: str) -> tuple[dict[str, Any], pq.FileMetaData]:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_file(path) as handle:  # an object store: one HEAD
            size = handle.size()
            entry: dict[str, Any] = {"path": public_uri(uri), "size": size}
            if is_object_store(uri):
                entry.update(_store_identity(handle.metadata()))
            else:
                entry["mtime"] = _iso(fs.get_file_info(path).mtime)
            footer = footer_bytes(handle, size)  # an object store: one ranged GET
            # The footer parsed from the bytes just hashed (no second read).
            meta = pq.read_metadata(pa.BufferReader(MAGIC + footer))
            entry["rows"] = meta.num_rows
            entry["footer_sha256"] = hashlib.sha256(footer).hexdigest()
            if mode == "full":  # every byte, streamed in BLOCK reads
                digest = hashlib.sha256()
                handle.seek(0)
                for block in iter(lambda: handle.read(BLOCK), b""):
                    digest.update(block)
                entry["sha256"] = digest.hexdigest()
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserInputError(f"{public_uri(uri)}: cannot fingerprint: {reason}") from None
    return entry, meta


def compared_fields(entry: dict[str, Any], mode: str) -> tuple[str, ...]:
    """The fields of a recorded file entry that must match today's (see data_fingerprint)."""
    if mode == "full":
        return ("size", "rows", "sha256")
    store = is_object_store(entry["path"])
    witness = next((k for k in ("etag", "version") if store and k in entry), "mtime")
    return ("size", "rows", "footer_sha256", witness)


def _identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    mode = fingerprint.get("mode", "full")
    files = {split: [{k: f.get(k) for k in ("path", *compared_fields(f, mode))} for f in entries]
             for split, entries in fingerprint["files"].items()}
    return {"mode": mode, "files": files, "columns": fingerprint["columns"],
            "schema_sha256": fingerprint["schema_sha256"]}


def data_fingerprint(data: ResolvedData, mode: str = "footer") -> dict[str, Any]:
    """What the run read: mode "footer" reads no data, "full" every byte. Per file (in threads):

    - path (absolute path or URI: never credentials or an endpoint), size, rows and
      footer_sha256 (the Parquet footer + its length + magic: one read of the tail);
    - local files: mtime, a change on its own: nothing else read in this mode covers the
      data pages, and a changed value can keep size and footer (plain encoding, no
      compression, neither a min nor a max). A touched or copied file reads as changed;
      a "full" fingerprint tells it apart;
    - object stores: etag, version on a versioned bucket (S3 VersionId, GCS generation)
      and mtime, from one HEAD (the footer: one ranged GET), no download. The ETag
      decides (a changed byte changes it; a re-upload of the same bytes usually keeps it);
      version, else mtime, only where the store gives no ETag;
    - mode "full": also sha256 of every byte (streamed from an object store), which
      alone decides (mtime, etag and version are kept for information).

    Plus the mode, the used columns, the schema's hash, and sha256 over exactly what
    compare_data compares (the MLflow tag: equal hashes, same data)."""
    if mode not in MODES:
        raise ValueError(f"fingerprint mode {mode!r}: one of {', '.join(MODES)}")
    uris = [*data.train_files, *data.validation_files]
    with ThreadPoolExecutor(max_workers=max(1, min(FOOTER_THREADS, len(uris)))) as pool:
        found = list(pool.map(lambda uri: _fingerprint(uri, mode), uris))
    entries = [entry for entry, _ in found]
    split = len(data.train_files)
    schema = found[0][1].schema.to_arrow_schema()
    schema_text = "\n".join(f"{name}: {schema.field(name).type}" for name in data.columns)
    fingerprint: dict[str, Any] = {
        "mode": mode, "files": {"train": entries[:split], "validation": entries[split:]},
        "columns": list(data.columns), "schema_sha256": hashlib.sha256(schema_text.encode()).hexdigest()}
    fingerprint["sha256"] = hashlib.sha256(json.dumps(_identity(fingerprint), sort_keys=True).encode()).hexdigest()
    return fingerprint


def cluster_resources() -> dict[str, Any]:
    """The Ray cluster this run used: its nodes and total resources (if Ray is up)."""
    try:
        import ray  # (lazy: tracking/ imports no Ray; the record asks it only when it is up)

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
    """What differs between two data fingerprints, one phrase per difference, in the
    recorded mode (a record without one is "full": it holds sha256 per file)."""
    mode, now = recorded.get("mode", "full"), current.get("mode", "full")
    if now != mode:  # every file would differ: one phrase says it
        return [f"the data was fingerprinted in mode {now}, recorded in {mode}: not comparable"]
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
            changed = sorted(k for k in compared_fields(old[path], mode)
                             if k in old[path] and old[path][k] != new[path].get(k))
            if changed == ["mtime"] and not is_object_store(path):
                problems.append(f"{path} changed (mtime only: size, rows and footer equal)")
            elif changed:
                problems.append(f"{path} changed ({', '.join(changed)})")
    return problems


def compare_versions(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    return [f"{name} {recorded[name]} -> {current.get(name)}" for name in sorted(recorded)
            if name != "raysweep" and recorded[name] != current.get(name)]
