"""Fresh MLflow sqlite stores for tests, made by copying one store that was created
once per test session; and an MLflow server over one.

Creating a sqlite store runs MLflow's schema migrations (1-2 s on 2 busy cores); a
test that starts from an empty store needs none of them run again. A copy is the
same empty store (no runs, the Default experiment) that MLflow would have made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


class SqliteStores:
    """new(path) -> the URI of an empty MLflow store at `path` (a copy of the template)."""

    def __init__(self, folder: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.template = folder / "template.db"
        MlflowClient(f"sqlite:///{self.template}").search_experiments()  # creates and migrates it

    def new(self, path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise FileExistsError(f"{path}: a store is already there")
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_uri: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`mlflow server` on 127.0.0.1 and a free port, over `backend_uri`, in a process
    group of its own (a fault case may stop it); yields (process, tracking URI) once
    /health answers, and kills the group after."""
    from raysweep.testing.helpers import free_port

    port = free_port()
    log = folder / "mlflow-server.log"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", backend_uri],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("the MLflow server did not come up: " + log.read_text()[-2000:]) from None
                time.sleep(0.5)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
