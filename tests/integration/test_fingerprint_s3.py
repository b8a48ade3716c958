"""The data fingerprint of files in a real S3 server (SeaweedFS, started here): mode
"footer" records each object's ETag, and no endpoint or key (the local-file cases:
tests/unit/test_fingerprint.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from raysweep.tracking.record import compare_data, data_fingerprint
from tests.support.fingerprint_files import resolved, write
from tests.support.seaweed import S3Server

ROWS = 100
TOP = 1000.0  # a new value for row 50: the column's new max





def test_s3_footer_mode_records_the_etag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "local"
    for index in range(3):
        write(local / f"part-{index}.parquet")
    uris = [f"s3://data/train/part-{i}.parquet" for i in range(3)]
    data = resolved(uris[:2], uris[2:])
    with S3Server(tmp_path / "s3", stop_timeout=2) as s3:
        s3.upload(local, "data/train")
        for name in [n for n in os.environ if n.startswith(("AWS_", "GOOGLE_"))]:
            monkeypatch.delenv(name)
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        footer, full = data_fingerprint(data), data_fingerprint(data, "full")
        entry = footer["files"]["train"][1]
        assert {"path", "size", "rows", "mtime", "footer_sha256", "etag"} <= set(entry) and "sha256" not in entry
        assert entry["path"] == uris[1] and entry["rows"] == ROWS and entry["etag"]
        assert full["files"]["train"][1]["sha256"] == hashlib.sha256(
            (local / "part-1.parquet").read_bytes()).hexdigest()
        for fp in (footer, full):
            text = json.dumps(fp)
            for secret in (s3.access_key, s3.secret_key, s3.endpoint, s3.endpoint_url, "127.0.0.1",
                           str(s3.ports["s3"])):
                assert secret not in text, secret

        # the same bytes again: the same ETag, no change
        s3.upload(local, "data/train")
        assert compare_data(footer, data_fingerprint(data)) == []

        shutil.rmtree(local)
        write(local / "part-1.parquet", change=TOP)  # same size, new footer
        s3.upload(local, "data/train")
        after = data_fingerprint(data)
        assert after["files"]["train"][1]["etag"] != entry["etag"]
        assert compare_data(footer, after) == [f"{uris[1]} changed (etag, footer_sha256)"]
        assert compare_data(full, data_fingerprint(data, "full")) == [f"{uris[1]} changed (sha256)"]
