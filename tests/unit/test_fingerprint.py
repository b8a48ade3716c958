"""The data fingerprint in the run record (raysweep.tracking.record.data_fingerprint,
compare_data): mode "footer" reads each file's tail only, mode "full" every byte;
local files (a real S3 server: tests/integration/test_fingerprint_s3.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysweep.data.files import ResolvedData
from raysweep.tracking import record
from raysweep.tracking.record import TAIL_READ, compare_data, data_fingerprint, public_uri
from tests.support.fingerprint_files import resolved, write

ROWS = 100
MIDDLE, TOP = 50.5, 1000.0  # a new value for row 50: inside the column's range, or its new max





def shift_mtime(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + int(seconds * 1e9)))


def set_mtime_ns(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(path.stat().st_atime_ns, mtime_ns))


@pytest.fixture
def local(tmp_path: Path) -> tuple[ResolvedData, Path]:
    train, validation = tmp_path / "train" / "part-0.parquet", tmp_path / "validation" / "part-0.parquet"
    write(train)
    write(validation, rows=20)
    return resolved([str(train)], [str(validation)]), train


def test_footer_mode_local_entry(local: tuple[ResolvedData, Path]) -> None:
    data, train = local
    fp = data_fingerprint(data)
    assert fp["mode"] == "footer" and fp["columns"] == ["x", "y"]
    entry = fp["files"]["train"][0]
    assert set(entry) == {"path", "size", "rows", "mtime", "footer_sha256"}
    assert entry["path"] == str(train) and entry["size"] == train.stat().st_size and entry["rows"] == ROWS
    assert fp["files"]["validation"][0]["rows"] == 20
    assert data_fingerprint(data) == fp, "the same data gives the same fingerprint"


def test_footer_mode_catches_a_changed_value(local: tuple[ResolvedData, Path]) -> None:
    data, train = local
    before = data_fingerprint(data)
    write(train, change=TOP)  # a new max: the footer's statistics change, the size does not
    shift_mtime(train, 1)  # deterministic: not left to the clock's resolution
    after = data_fingerprint(data)
    assert compare_data(before, after) == [f"{train} changed (footer_sha256, mtime)"]
    assert after["sha256"] != before["sha256"]


def test_footer_mode_catches_a_same_size_same_footer_change_by_mtime(local: tuple[ResolvedData, Path]) -> None:
    """Why mtime alone counts for a local file: a value inside the column's range keeps
    size and footer; the mtime is then the only witness footer mode has."""
    data, train = local
    before = data_fingerprint(data)
    write(train, change=MIDDLE)
    shift_mtime(train, 1)
    after = data_fingerprint(data)
    old, new = before["files"]["train"][0], after["files"]["train"][0]
    assert (old["size"], old["footer_sha256"]) == (new["size"], new["footer_sha256"])
    assert compare_data(before, after) == [f"{train} changed (mtime only: size, rows and footer equal)"]


def test_touched_file_differs_only_in_mtime(local: tuple[ResolvedData, Path]) -> None:
    data, train = local
    footer, full = data_fingerprint(data), data_fingerprint(data, "full")
    shift_mtime(train, 5)
    assert compare_data(footer, data_fingerprint(data)) == [
        f"{train} changed (mtime only: size, rows and footer equal)"]
    assert compare_data(full, data_fingerprint(data, "full")) == [], "full mode: same bytes, no change"


def test_full_mode_catches_the_change_via_sha256(local: tuple[ResolvedData, Path]) -> None:
    data, train = local
    mtime_ns = train.stat().st_mtime_ns
    footer, full = data_fingerprint(data), data_fingerprint(data, "full")
    entry = full["files"]["train"][0]
    assert full["mode"] == "full" and entry["sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    write(train, change=MIDDLE)
    set_mtime_ns(train, mtime_ns)  # same size, footer and mtime: only the bytes differ
    assert compare_data(full, data_fingerprint(data, "full")) == [f"{train} changed (sha256)"]
    assert compare_data(footer, data_fingerprint(data)) == [], "the limit of footer mode"


def test_an_old_record_without_mode_compares_as_full(local: tuple[ResolvedData, Path]) -> None:
    data, train = local
    full = data_fingerprint(data, "full")
    old = {"schema_sha256": full["schema_sha256"], "columns": full["columns"],
           "files": {s: [{k: f[k] for k in ("path", "size", "rows", "sha256")} for f in entries]
                     for s, entries in full["files"].items()}}
    shift_mtime(train, 5)
    assert compare_data(old, data_fingerprint(data, "full")) == []
    write(train, change=MIDDLE)
    assert compare_data(old, data_fingerprint(data, "full")) == [f"{train} changed (sha256)"]
    assert compare_data(old, data_fingerprint(data)) == [
        "the data was fingerprinted in mode footer, recorded in full: not comparable"]


class CountingFile:
    def __init__(self, inner: Any, reads: list[int]) -> None:
        self.inner, self.reads = inner, reads

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.close()

    def read(self, nbytes: int | None = None) -> bytes:
        data = self.inner.read(nbytes)
        self.reads.append(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = record.filesystem

    class CountingFS:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def open_input_file(self, path: str) -> CountingFile:
            return CountingFile(self.inner.open_input_file(path), reads)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    def counting(uri: str) -> tuple[Any, str]:
        fs, path = real(uri)
        return CountingFS(fs), path

    monkeypatch.setattr(record, "filesystem", counting)
    return reads


def test_footer_mode_reads_the_tail_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big, wide = tmp_path / "big.parquet", tmp_path / "wide.parquet"
    write(big, rows=1_000_000)  # 16 MB
    write(wide, rows=20_000, row_group_size=20)  # 1,000 row groups: a footer over TAIL_READ
    reads = count_reads(monkeypatch)
    fp = data_fingerprint(resolved([str(big)], [str(wide)]))
    size, wide_size = big.stat().st_size, wide.stat().st_size
    assert [f["rows"] for f in (*fp["files"]["train"], *fp["files"]["validation"])] == [1_000_000, 20_000]
    footer = pq.ParquetFile(wide).metadata.serialized_size + 8
    assert footer > TAIL_READ and footer < wide_size // 2
    assert sorted(reads) == sorted([TAIL_READ, TAIL_READ, footer]), (reads, size)
    reads.clear()
    data_fingerprint(resolved([str(big)], []), "full")
    assert sum(reads) >= size, "the counter sees full reads"


def test_public_uri_drops_credentials() -> None:
    assert public_uri("s3://AKIA:secret@bucket/p/a.parquet") == "s3://bucket/p/a.parquet"
    assert public_uri("gs://bucket/p/a@b.parquet") == "gs://bucket/p/a@b.parquet"
    assert public_uri("/data/a@b.parquet") == "/data/a@b.parquet"


def test_store_metadata_keys_of_s3_and_gcs() -> None:
    """Only the ETag, a version and the mtime are kept, whatever else the store sends."""
    s3 = pa.KeyValueMetadata({"Content-Length": b"990", "ETag": b'"ab12-1"', "VersionId": b"null",
                              "Last-Modified": b"2026-11-27T14:12:24Z"})
    assert record._store_identity(s3) == {"etag": "ab12-1", "mtime": "2026-11-27T14:12:24.000000Z"}
    gcs = pa.KeyValueMetadata({"selfLink": b"https://storage.googleapis.com/b/o", "owner.entity": b"user-x",
                               "generation": b"1732716744123456", "updated": b"2026-11-27T14:12:24.5+00:00",
                               "etag": b"CMDi7rG", "md5Hash": b"q1w2"})
    assert record._store_identity(gcs) == {"etag": "CMDi7rG", "version": "1732716744123456",
                                           "mtime": "2026-11-27T14:12:24.500000Z"}


def test_reproduce_fingerprints_today_in_the_recorded_mode(local: tuple[ResolvedData, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from raysweep import reproduce
    from raysweep.errors import UserInputError
    from raysweep.tracking.record import versions

    data, train = local
    modes: list[str] = []
    real = reproduce.data_fingerprint
    monkeypatch.setattr(reproduce, "validate_spec", lambda raw, source: SimpleNamespace(data=None))
    monkeypatch.setattr(reproduce, "resolve_data", lambda spec, source: data)

    def fingerprint(d: ResolvedData, mode: str) -> dict[str, Any]:
        modes.append(mode)
        return real(d, mode)

    monkeypatch.setattr(reproduce, "data_fingerprint", fingerprint)
    recorded = {mode: data_fingerprint(data, mode) for mode in ("footer", "full")}
    write(train, change=MIDDLE)
    shift_mtime(train, 1)
    for mode, phrase in (("full", "changed (sha256)"), ("footer", "changed (mtime only")):
        run = SimpleNamespace(kind="train", params={}, record={"spec": {"trainer": "raysweep.testing.probe"},
                                                              "data": recorded[mode],
                                                              "versions": versions()})
        monkeypatch.setattr(reproduce, "load_recorded", lambda run_id, run=run: run)
        with pytest.raises(UserInputError, match="refusing to reproduce") as refused:
            reproduce.reproduce("r1")
        assert f"{train} {phrase}" in str(refused.value) and modes[-1] == mode
