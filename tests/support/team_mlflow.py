"""A team's MLflow for tests: PostgreSQL holds runs, the model registry and the
users; `mlflow server --app-name basic-auth` serves them over HTTP with basic auth
and proxies artifacts to an S3 bucket.

    with S3Server(tmp / "s3") as s3, TeamMlflow(s3, bucket="mlflow") as team:
        alice = team.add_user("alice")                       # (name, password)
        env = team.client_env(*alice)                        # MLFLOW_TRACKING_URI/USERNAME/PASSWORD
        MlflowClient(team.uri)                               # with those in os.environ

Both servers listen on 127.0.0.1 only, at ports picked free at start. Everything
they write (the database cluster, the Unix socket, logs, the auth config) lives in
one temporary folder (`tempfile.mkdtemp`, so under $TMPDIR), removed by `stop()`.
Each server runs in its own process group, stopped by its group id, never by name.

PostgreSQL refuses to run as root. Under root the database cluster is created and
run as an unprivileged user (`nobody` unless `pg_user` says otherwise) through
Popen's `user=`/`group=`; its folder is handed to that user and the temporary
folder above it is opened for traversal only (0711). Not root: as the current user.
The PostgreSQL binaries: $PG_BIN, else the newest /usr/lib/postgresql/*/bin (Debian,
Ubuntu), else `pg_config --bindir`, else `initdb` on PATH.

Credentials never go on a command line: the database password reaches `initdb` in
a file (deleted right after) and `mlflow server` as PGPASSWORD; the admin's as
MLFLOW_AUTH_ADMIN_PASSWORD. The URIs given out carry none.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from raysweep.cluster.isolation import free_port
from tests.support.seaweed import S3Server

HOST = "127.0.0.1"
DB_USER = "mlflow"
DATABASES = ("mlflow", "mlflow_auth")  # runs and registry; basic auth's users and permissions
ADMIN = "admin"


# Started and not stopped yet: stopped when the interpreter exits (as S3Server does).
_RUNNING: set[TeamMlflow] = set()


@atexit.register
def _stop_all() -> None:
    for team in list(_RUNNING):
        team.stop()


class TeamMlflowError(RuntimeError):
    """A server did not start (the message ends with its log's tail)."""


def postgres_bin() -> Path:
    """The folder holding initdb and postgres."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        return Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise FileNotFoundError("no PostgreSQL binaries (initdb, postgres): apt-get install postgresql, or set PG_BIN")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _stop_group(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """`sig` to the process group `proc` leads, then SIGKILL to what is left after
    `timeout` s; returns once the leader is reaped."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (workers) of our own group only
    except ProcessLookupError:
        pass
    proc.wait()


class Postgres:
    """A throwaway PostgreSQL cluster in `folder` on 127.0.0.1:`port` (picked free),
    password auth (scram-sha-256) for `DB_USER`, the `DATABASES` created."""

    def __init__(self, folder: Path, *, pg_user: str | None = None, startup_timeout: float = 60.0) -> None:
        self.folder = folder
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.log_path = folder / "postgres.log"
        self._bin = postgres_bin()
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_timeout = startup_timeout
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # postgres refuses root: an unprivileged user runs it
            account = pwd.getpwnam(pg_user or "nobody")
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def uri(self, database: str = DATABASES[0]) -> str:
        """A SQLAlchemy URI without the password (libpq reads it from PGPASSWORD)."""
        return f"postgresql+psycopg2://{DB_USER}@{HOST}:{self.port}/{database}"

    def connect(self, database: str = DATABASES[0], **options: Any) -> Any:
        """A psycopg2 connection as `DB_USER`."""
        import psycopg2

        return psycopg2.connect(host=HOST, port=self.port, user=DB_USER, password=self.password,
                                dbname=database, **options)

    def start(self) -> Postgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        data, sockets = self.folder / "data", self.folder / "run"
        sockets.mkdir(exist_ok=True)
        if self._as:
            for path in (self.folder, sockets):
                os.chown(path, self._as["user"], self._as["group"])
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.folder)}
        try:
            with open(self.folder / "initdb.log", "wb") as log:
                done = subprocess.run(
                    [str(self._bin / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}",
                     "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
                    cwd=self.folder, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    **self._as)
        finally:
            pwfile.unlink()
        if done.returncode != 0:
            raise TeamMlflowError(f"initdb exited with status {done.returncode}\n"
                                  f"{_log_tail(self.folder / 'initdb.log')}")
        deadline = time.monotonic() + self.startup_timeout
        for attempt in range(3):
            self.port = free_port(HOST)
            command = [str(self._bin / "postgres"), "-D", str(data), "-c", f"listen_addresses={HOST}",
                       "-p", str(self.port), "-c", f"unix_socket_directories={sockets}",
                       "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=50"]
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(command, cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                              **self._as)
            try:
                self._wait_ready(deadline)
                break
            except TeamMlflowError:
                code = self._proc.poll()
                self.stop()
                if attempt < 2 and code is not None and "already in use" in _log_tail(self.log_path, 5):
                    continue  # the port was taken between picking and binding
                raise
        self._create_databases()
        return self

    def _wait_ready(self, deadline: float) -> None:
        import psycopg2

        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TeamMlflowError(f"postgres exited with status {self._proc.returncode}\n"
                                      f"{_log_tail(self.log_path)}")
            try:
                self.connect("postgres", connect_timeout=1).close()
                return
            except psycopg2.OperationalError:
                time.sleep(0.2)
        raise TeamMlflowError(f"postgres on {HOST}:{self.port} did not answer within {self.startup_timeout:g} s\n"
                              f"{_log_tail(self.log_path)}")

    def _create_databases(self) -> None:
        conn = self.connect("postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cursor:
                for name in DATABASES:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect, exit), SIGKILL after 10 s.
        (PostgreSQL's own children each lead a session of their own: the postmaster
        ends them, and they exit by themselves if it was killed.)"""
        if self._proc is not None:
            _stop_group(self._proc, signal.SIGINT, timeout=10)
            self._proc = None


class MlflowServer:
    """`mlflow server --app-name basic-auth` on 127.0.0.1:`port`: runs, registry and
    users in `postgres`, artifacts proxied to s3://`bucket`/ on `s3`."""

    def __init__(self, folder: Path, postgres: Postgres, s3: S3Server, bucket: str, *,
                 workers: int = 1, startup_timeout: float = 120.0, host: str = HOST) -> None:
        self.folder = folder
        self.host = host  # another address than loopback: for hosts in network namespaces
        self.postgres, self.s3, self.bucket = postgres, s3, bucket
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.admin_password = secrets.token_urlsafe(24)
        self.port = 0
        self.log_path = folder / "mlflow.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/artifacts"

    def _env(self) -> dict[str, str]:
        # nothing of the caller's MLflow client settings; the S3 server's AWS variables
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
        env.update(self.s3.env())
        auth_config = self.folder / "basic_auth.ini"
        auth_config.write_text("[mlflow]\ndefault_permission = READ\n"
                               f"database_uri = {self.postgres.uri(DATABASES[1])}\n"
                               f"admin_username = {ADMIN}\n")
        env.update({
            "HOME": str(self.folder),
            "MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "PGPASSWORD": self.postgres.password,
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            # its GenAI job runner: eight more processes, none of them used here
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        })
        return env

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.s3.create_bucket(self.bucket)
        env = self._env()
        deadline = time.monotonic() + self.startup_timeout
        for attempt in range(3):
            self.port = free_port(self.host)
            command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                       "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
                       "--backend-store-uri", self.postgres.uri(),
                       "--artifacts-destination", self.artifacts_destination,
                       # (198.18.0.0/15, the test hosts' range, is not among its default private ranges)
                       "--allowed-hosts", f"{self.host}:{self.port},{self.host},localhost:{self.port}"]
            with open(self.log_path, "ab") as log:
                log.write(f"--- start: {' '.join(command)}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(command, cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self._wait_ready(deadline)
                return self
            except TeamMlflowError:
                code = self._proc.poll()
                self.stop()
                if attempt < 2 and code is not None and "address already in use" in _log_tail(self.log_path).lower():
                    continue
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self, deadline: float) -> None:
        """Until the admin can list experiments (the schema is migrated, auth is up)."""
        import requests

        assert self._proc is not None
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TeamMlflowError(f"mlflow server exited with status {self._proc.returncode}\n"
                                      f"{_log_tail(self.log_path)}")
            try:
                answer = requests.get(f"{self.uri}/api/2.0/mlflow/experiments/search",
                                      params={"max_results": 1}, auth=(ADMIN, self.admin_password), timeout=5)
                if answer.status_code == 200:
                    return
                last = f"HTTP {answer.status_code}"
            except requests.RequestException as err:
                last = type(err).__name__
            time.sleep(0.5)
        raise TeamMlflowError(f"mlflow server at {self.uri} did not answer within {self.startup_timeout:g} s "
                              f"(last: {last})\n{_log_tail(self.log_path)}")

    def stop(self) -> None:
        if self._proc is not None:
            _stop_group(self._proc, signal.SIGTERM, timeout=10)
            self._proc = None


class TeamMlflow:
    """PostgreSQL + `mlflow server` (basic auth, artifacts in s3://`bucket`), started
    together; a context manager. `uri` is the tracking URI (no credentials in it)."""

    def __init__(self, s3: S3Server, bucket: str = "mlflow", *, pg_user: str | None = None,
                 host: str = HOST) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="raysweep-team-mlflow-"))
        self.root.chmod(0o711)  # an unprivileged postgres reaches its own folder, lists nothing here
        self.postgres = Postgres(self.root / "pg", pg_user=pg_user)
        self.server = MlflowServer(self.root / "mlflow", self.postgres, s3, bucket, host=host)

    @property
    def uri(self) -> str:
        return self.server.uri

    @property
    def admin(self) -> tuple[str, str]:
        return ADMIN, self.server.admin_password

    def client_env(self, username: str, password: str) -> dict[str, str]:
        """What a raysweep user sets: the URI, and the credentials beside it."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": username,
                "MLFLOW_TRACKING_PASSWORD": password}

    def add_user(self, username: str) -> tuple[str, str]:
        """A new user (the server's default permission, READ, on what others made;
        MANAGE on what it creates). Returns (username, password)."""
        import requests

        password = secrets.token_urlsafe(24)
        answer = requests.post(f"{self.uri}/api/2.0/mlflow/users/create", json={"username": username,
                               "password": password}, auth=self.admin, timeout=30)
        answer.raise_for_status()
        return username, password

    def start(self) -> TeamMlflow:
        _RUNNING.add(self)
        try:
            self.postgres.start()
            self.server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server, then PostgreSQL (each by its process group); remove the folder."""
        try:
            self.server.stop()
        finally:
            self.postgres.stop()
            shutil.rmtree(self.root, ignore_errors=True)
            _RUNNING.discard(self)

    def __enter__(self) -> TeamMlflow:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
