"""Where data lives: local paths and globs, `file://`, `s3://`, `gs://`, through pyarrow.

Credentials and endpoints come from the standard environment, never from the spec:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (or the AWS config
files, or the instance's role), AWS_REGION, and AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL for S3-compatible stores (MinIO, SeaweedFS, R2); Google's
application-default credentials for gs://. Nothing here prints or records them.
Used on the driver (listing, footers) and in workers (the stream loader's reads).
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysweep.errors import UserInputError

T = TypeVar("T")
OBJECT_STORES = ("s3://", "gs://")
DEADLINE_S = 12.0
"""Longest `check` waits on an object store for a listing or the footers."""
# An unreachable endpoint, a missing bucket or denied credentials must fail within
# seconds, not after the AWS SDK's default retries (minutes).
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 8.0
MAX_ATTEMPTS = 2
# In a run (the sweep's driver after `check`, the trial and worker processes, and Ray's
# own checkpoint and state uploads: run_storage), a store that stops answering for a
# while (a restart, a network blip: ordinary in a cloud) must not end the work: each
# request waits longer and is retried with the AWS SDK's exponential backoff (up to
# 20 s apart) for about two minutes in all. (GCS: its retry limit.)
PATIENT_CONNECT_TIMEOUT_S = 10.0
PATIENT_REQUEST_TIMEOUT_S = 30.0
PATIENT_MAX_ATTEMPTS = 10
PATIENT_RETRY_S = 120.0
_patient = False


def use_patient_io() -> None:
    """From now on this process's object-store clients retry with backoff instead of
    failing fast (call it where a run starts; `check` stays fail-fast)."""
    global _patient
    _patient = True


@dataclass(frozen=True)
class StoredFile:
    """One Parquet file: where it is, and what its store says about it (no download)."""

    uri: str
    """An absolute local path, or the object's s3:// / gs:// URI."""
    size: int
    mtime: float | None
    """Seconds since the epoch (local files; object stores give their own)."""


def is_object_store(location: str) -> bool:
    return location.startswith(OBJECT_STORES)


def s3_options(patient: bool = False) -> dict[str, object]:
    """S3FileSystem settings from the standard AWS environment (credentials stay with
    the AWS SDK's own lookup: env, config files, instance role); fail-fast, or
    `patient` (in a run)."""
    connect, request, attempts = ((PATIENT_CONNECT_TIMEOUT_S, PATIENT_REQUEST_TIMEOUT_S, PATIENT_MAX_ATTEMPTS)
                                  if patient else (CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, MAX_ATTEMPTS))
    options: dict[str, object] = {"connect_timeout": connect, "request_timeout": request,
                                  "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parsed.netloc + parsed.path.rstrip("/"), scheme=parsed.scheme)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region or endpoint:
        options["region"] = region or "us-east-1"
    return options


@functools.cache
def _object_store(scheme: str, environment: tuple[tuple[str, str], ...], patient: bool = False) -> pafs.FileSystem:
    if scheme == "s3":
        return pafs.S3FileSystem(**s3_options(patient))
    return pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=PATIENT_RETRY_S if patient else REQUEST_TIMEOUT_S))


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path, file://, s3:// or gs:// URI.
    One filesystem per process and environment (reused by every read)."""
    if location.startswith("file://"):
        return pafs.LocalFileSystem(), urlparse(location).path
    if not is_object_store(location):
        return pafs.LocalFileSystem(), location
    scheme, rest = location.split("://", 1)
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_"))))
    return _object_store(scheme, environment, _patient), rest


def run_storage(path: str) -> dict[str, Any]:
    """Ray's RunConfig storage arguments for `path`: an object store through this
    process's client (patient in a run: Ray's own default retries a few times within
    seconds, and a checkpoint upload that fails fails the trial)."""
    if not is_object_store(path):
        return {"storage_path": path}
    fs, inner = filesystem(path)
    return {"storage_path": inner, "storage_filesystem": fs}


def uri_of(fs: Any, path: str) -> str:
    """`path` inside pyarrow filesystem `fs` as a URI (s3://, gs://; a local path as it
    is): what a Ray checkpoint's (filesystem, path) means outside that process."""
    kind = getattr(fs, "type_name", "")
    if kind == "s3":
        return f"s3://{path.lstrip('/')}"
    if kind == "gcs":
        return f"gs://{path.lstrip('/')}"
    return path


def within_deadline(work: Callable[[], T], seconds: float, message: str) -> T:
    """`work()`, or a UserInputError(`message`) when it has not answered in `seconds`
    (a store that accepts connections and then says nothing would otherwise hold
    `raysweep check` for minutes). The abandoned call ends with the process."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="raysweep-store-deadline")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise UserInputError(f"{message}: no answer within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _store_error(location: str, source: str, field: str, what: str, exc: BaseException) -> UserInputError:
    return UserInputError(f"{source}: {field}: {what} {location}: {_reason(exc)}")


def list_parquet(location: str, *, source: str, field: str) -> list[StoredFile]:
    """A Parquet file, a folder (searched recursively) or a glob -> files sorted by URI.
    A local `location` must be absolute (see config.load.resolve_path).

    Raises UserInputError naming the location on no files, an unreachable store, a
    missing bucket or denied credentials."""
    fs, path = filesystem(location)
    scheme = location.split("://", 1)[0] + "://" if is_object_store(location) else ""
    try:
        if any(ch in path for ch in "*?["):
            infos = _glob(fs, path, local=not scheme)
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                infos = [info]
            elif info.type == pafs.FileType.Directory:
                infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                         if i.type == pafs.FileType.File and i.path.endswith(".parquet")]
            else:
                infos = []
    except (OSError, pa.ArrowException) as exc:
        raise _store_error(location, source, field, "cannot list", exc) from None
    if not infos:
        bucket = path.split("/", 1)[0]
        if scheme and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise UserInputError(f"{source}: {field}: bucket {scheme}{bucket} does not exist (or is not visible "
                                 f"with these credentials)")
        raise UserInputError(f"{source}: {field}: no Parquet files at {location!r}")
    files = [StoredFile(scheme + i.path if scheme else str(Path(i.path).resolve()), int(i.size or 0),
                        i.mtime.timestamp() if i.mtime is not None else None) for i in infos]
    return sorted(files, key=lambda f: f.uri)


def _glob(fs: pafs.FileSystem, pattern: str, local: bool) -> list[pafs.FileInfo]:
    if local:
        return [i for i in fs.get_file_info(sorted(glob.glob(pattern, recursive=True)))
                if i.type == pafs.FileType.File]
    literal = pattern[:min(pattern.find(c) for c in "*?[" if c in pattern)]
    base = literal.rsplit("/", 1)[0]
    return [i for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
            if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, pattern)]


def open_parquet(uri: str) -> pq.ParquetFile:
    """A ParquetFile reading straight from its store (footer now, row groups on demand)."""
    fs, path = filesystem(uri)
    return pq.ParquetFile(fs.open_input_file(path))


def open_input(uri: str) -> pa.NativeFile:
    """A random-access handle on `uri`, local or in an object store."""
    fs, path = filesystem(uri)
    return fs.open_input_file(path)


def read_footer(uri: str) -> pq.FileMetaData:
    """The file's footer only (schema, row groups, row counts), or a one-line UserInputError."""
    try:
        return open_parquet(uri).metadata
    except (OSError, pa.ArrowException) as exc:
        raise UserInputError(f"{uri}: not a readable Parquet file: {_reason(exc)}") from None
