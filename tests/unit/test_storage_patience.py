"""`check` fails fast on an object store; a run retries (storage.use_patient_io)."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from raysweep.data import storage


def test_a_run_retries_longer_than_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(storage, "_patient", False)
    quick, _ = storage.filesystem("s3://bucket/data")
    storage.use_patient_io()
    patient, path = storage.filesystem("s3://bucket/data")
    assert path == "bucket/data" and patient is not quick
    assert storage.s3_options()["connect_timeout"] == storage.CONNECT_TIMEOUT_S
    options = storage.s3_options(patient=True)
    assert options["connect_timeout"] > storage.CONNECT_TIMEOUT_S
    assert options["request_timeout"] > storage.REQUEST_TIMEOUT_S
    assert storage.PATIENT_MAX_ATTEMPTS > storage.MAX_ATTEMPTS


def test_ray_storage_arguments_keep_local_paths_and_give_object_stores_the_client(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert storage.run_storage("/runs/x") == {"storage_path": "/runs/x"}
    given = storage.run_storage("s3://runs/x")
    assert given["storage_path"] == "runs/x" and isinstance(given["storage_filesystem"], pafs.S3FileSystem)


def test_a_checkpoint_in_a_bucket_is_named_with_its_scheme(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3, _ = storage.filesystem("s3://runs/x")
    assert storage.uri_of(s3, "runs/sweeps/a/checkpoint_000001") == "s3://runs/sweeps/a/checkpoint_000001"
    assert storage.uri_of(pafs.LocalFileSystem(), "/r/checkpoint_000001") == "/r/checkpoint_000001"
