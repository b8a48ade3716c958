"""The SeaweedFS S3 server the data-streaming tests use (tests.support.seaweed):
one real server, reached by pyarrow through the standard AWS variables only."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from raysweep.testing.helpers import listening_sockets
from tests.support.seaweed import S3Server

STANDARD = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def test_seaweed_s3_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "local"
    (local / "more").mkdir(parents=True)
    table = pa.table({"x": list(range(100)), "y": [float(i) / 2 for i in range(100)]})
    pq.write_table(table, local / "part-0.parquet")
    pq.write_table(table.slice(0, 10), local / "more" / "part-1.parquet")

    with S3Server(tmp_path / "s3", stop_timeout=3) as s3:
        pgid, pid = s3.pgid, s3.pid
        assert pgid is not None and pid is not None

        # every port of the server: the 8 it was given, each on 127.0.0.1 only
        sockets = listening_sockets([pgid])
        bound = {int(s["bind"].rsplit(":", 1)[1]) for s in sockets}
        assert bound == {*s3.ports.values(), *s3.grpc_ports.values()}, sockets
        assert all(s["loopback_only"] for s in sockets), sockets

        written = s3.upload(local, "data/train")
        assert written == ["data/train/more/part-1.parquet", "data/train/part-0.parquet"]

        # only the standard variables: no endpoint_override, no scheme, no keys passed
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        env = s3.env()
        for name in STANDARD:
            monkeypatch.setenv(name, env[name])
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

        fs, path = pafs.FileSystem.from_uri("s3://data/train")
        assert path == "data/train"
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = {i.path: i for i in infos if i.type == pafs.FileType.File}
        assert sorted(files) == written
        assert files["data/train/part-0.parquet"].size == (local / "part-0.parquet").stat().st_size
        assert files["data/train/part-0.parquet"].mtime is not None

        assert pq.read_table("s3://data/train/part-0.parquet").equals(table)
        assert pq.read_table("s3://data/train").num_rows == 110
        # the ETag is not in FileInfo: a HEAD (open_input_file / open_input_stream) has it
        with fs.open_input_file("data/train/part-0.parquet") as f:
            assert f.metadata()["ETag"].strip(b'"')

        # a wrong secret is refused at once
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + env["AWS_SECRET_ACCESS_KEY"])
        with pytest.raises(OSError, match="ACCESS_DENIED"):
            pq.read_table("s3://data/train/part-0.parquet")

    assert not s3.group_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    s3.stop()  # again: nothing to do
