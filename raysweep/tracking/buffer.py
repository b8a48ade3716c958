"""MLflow writes that outlive a tracking server that stops answering.

A sweep's tracker writes from Tune's driver loop: a tracking server that stopped
answering used to hold the loop for MLflow's own retries (about 2 minutes) and then
end the sweep with the error. `WriteBehind` takes the writes (`open`, metrics, tags,
params, text, `close`) in order and returns at once; one thread sends them, retrying
each with backoff while the server is unreachable, for up to `patience_s`. A write
the server refuses (a bad value, an unknown run) is said in one line and dropped.

A resumed sweep continues each unfinished trial from the checkpoint its run names
(`raysweep.checkpoint`, written after the epoch's metrics): the writes go in order, so
a driver lost with writes still queued leaves MLflow a consistent prefix of the
sweep's events, and the resumed trial logs again what was lost. While the server is
away the writes wait here (reads flush first) and the sweep goes on.

`open` returns a stand-in run id (`pending:KEY`) at once; later writes may use it,
and `resolve` gives the real id once the run exists.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from raysweep.tracking.store import RunStore

PENDING = "pending:"
PATIENCE_S = 1800.0
"""How long one write is retried while the tracking server is unreachable."""
REFUSALS = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                      "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED"})
"""MLflow error codes of a server that answered and refused: retrying cannot help."""


def refused(error: BaseException) -> bool:
    """Whether `error` is the server's answer (not a server that is away)."""
    return getattr(error, "error_code", None) in REFUSALS


class WriteBehind(RunStore):
    """A RunStore's writes, queued and sent in order by one thread (see the module)."""

    def __init__(self, store: RunStore, patience_s: float = PATIENCE_S, max_backoff_s: float = 30.0,
                 say: Callable[[str], None] | None = None) -> None:
        # (no super().__init__: `store` is connected already)
        self.store, self.uri, self.experiment_id = store, store.uri, store.experiment_id
        if hasattr(store, "client"):  # (a NullStore has none)
            self.client = store.client
        self.patience_s, self.max_backoff_s = patience_s, max_backoff_s
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._queue: collections.deque[tuple[str, tuple[Any, ...]]] = collections.deque()
        self._ids: dict[str, str] = {}
        self._cond = threading.Condition()
        self._busy = False
        self.dropped = 0
        self.retried = 0
        self._away_since: float | None = None  # (the server unreachable since then)
        self._thread = threading.Thread(target=self._loop, name="raysweep-mlflow-writes", daemon=True)
        self._thread.start()

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks (with the tracker and this store) into its
        experiment state: the store and settings travel, not the queue or thread."""
        return {"store": self.store, "patience_s": self.patience_s, "max_backoff_s": self.max_backoff_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["patience_s"], state["max_backoff_s"])  # type: ignore[misc]

    # -- writes (return at once) ---------------------------------------------------

    def open(self, key: str, run_name: str, parent_id: str | None = None,
             params: dict[str, Any] | None = None) -> str:
        stand_in = PENDING + key
        self._put("open", stand_in, key, run_name, parent_id, params)
        return stand_in

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        self._put("log_metrics", run_id, dict(metrics), step,
                  int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._put("set_tags", run_id, dict(tags))

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self._put("log_params", run_id, dict(params))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._put("log_text", run_id, text, artifact_file)

    def close(self, run_id: str, status: str) -> None:
        self._put("close", run_id, status)

    # -- reads (after every queued write) ------------------------------------------

    def resolve(self, run_id: str) -> str:
        """The real MLflow run id of `run_id` (a stand-in once its run exists)."""
        if run_id.startswith(PENDING) and run_id not in self._ids:
            self.flush()
        return self._ids.get(run_id, run_id)

    def find(self, key: str) -> str | None:
        self.flush()
        return self.store.find(key)

    def children(self, parent_id: str) -> list[Any]:
        self.flush()
        return self.store.children(self.resolve(parent_id))

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        self.flush()
        return self.store.metric_history(self.resolve(run_id), key)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write was sent (or dropped); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + int(self._busy)

    # -- the sending thread --------------------------------------------------------

    def _put(self, op: str, *args: Any) -> None:
        with self._cond:
            self._queue.append((op, args))
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                op, args = self._queue.popleft()
                self._busy = True
            try:
                self._send(op, args)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, op: str, args: tuple[Any, ...]) -> None:
        backoff = 1.0
        while True:
            try:
                self._apply(op, args)
            except Exception as error:  # noqa: BLE001  (said and retried or dropped, never raised)
                cause = " ".join(str(error).split())[:300]
                now = time.monotonic()
                if refused(error) or (self._away_since is not None and now - self._away_since > self.patience_s):
                    self.dropped += 1
                    self._say(f"MLflow: {op} of run {args[0]} not recorded ({cause})")
                    return
                if self._away_since is None:
                    self._away_since = now
                    self._say(f"MLflow: {self.uri} does not answer ({cause}); its writes are kept and retried "
                              f"for up to {self.patience_s:.0f} s")
                self.retried += 1
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if self._away_since is not None:
                self._away_since = None
                self._say(f"MLflow: {self.uri} answers again; the kept writes are sent")
            return

    def _apply(self, op: str, args: tuple[Any, ...]) -> None:
        run_id = args[0]
        if op == "open":
            self._ids[run_id] = self.store.open(*args[1:])
            return
        real = self._ids.get(run_id, run_id)
        if op == "log_metrics":
            self.store.log_metrics(real, args[1], args[2], timestamp_ms=args[3])
        else:
            getattr(self.store, op)(real, *args[1:])
