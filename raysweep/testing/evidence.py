"""Evidence for the fault suite's figures: what a run left on disk, in its probe files
and in MLflow, counted (never the number a test expects).

- Checkpoints: the checkpoints a run's own records say it reported (Ray Train's
  `checkpoint_manager_snapshot.json`, the latest checkpoint in each Tune trial's
  `result.json`, the `raysweep.checkpoint` tag of each MLflow run), and of those,
  which are missing from disk or refused by `load_state` (cut short, altered).
- Rows: the row ids the probe trainer (`raysweep.testing.probe`) trained on per
  epoch, from its per-rank per-epoch `.npy` files or from its step log (which also
  holds the steps of a killed attempt), against the data's row ids.
- MLflow: the runs the store holds, read back: how many are still RUNNING, and how
  many are beyond one per run key (or per trial parameter set).
- Attempts: where each attempt (process) of a probe rank started training, which
  shows which checkpoint it loaded.

Heavy imports (MLflow, torch, pyarrow) happen inside the functions that need them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNAPSHOT = "checkpoint_manager_snapshot.json"
"""Ray Train's record of the checkpoints it registered (and kept) for a run."""
TUNE_RESULT = "result.json"
"""A Tune trial's reports, one JSON line each; a report with a checkpoint names its folder."""

# --- checkpoints ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointEvidence:
    """Checkpoints a run reported, and which of them are gone or unloadable."""

    reported: tuple[Path, ...]
    missing: tuple[Path, ...]
    """Reported, but no such folder on disk."""
    unloadable: tuple[Path, ...]
    """On disk, but `load_state` refuses it (incomplete or altered)."""
    unreported: tuple[Path, ...] = ()
    """Checkpoint folders on disk that no record names (not even an older Tune
    report): written by a worker, never registered (e.g. its run was killed before
    the report reached the controller)."""

    @property
    def lost(self) -> tuple[Path, ...]:
        return self.missing + self.unloadable

    def lost_except(self, *planted: str | Path) -> int:
        """How many were lost, not counting the ones a test damaged itself."""
        skip = {Path(p).resolve() for p in planted}
        return sum(p.resolve() not in skip for p in self.lost)


def _json_file(path: Path, tries: int = 50) -> Any:
    """A JSON file another process may be rewriting (Ray rewrites its snapshot in
    place): read until it parses."""
    for attempt in range(tries):
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, FileNotFoundError):
            if attempt == tries - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _snapshot_checkpoints(snapshot: Path) -> list[Path]:
    state = _json_file(snapshot)
    entries = list(state.get("checkpoint_results") or [])
    if state.get("latest_checkpoint_result"):
        entries.append(state["latest_checkpoint_result"])
    return [snapshot.parent / e["checkpoint_dir_name"] for e in entries if e.get("checkpoint_dir_name")]


def _tune_checkpoints(result: Path) -> list[Path]:
    """Every checkpoint a Tune trial reported, in order (all but the latest may have
    been pruned by `checkpoint.num_to_keep`; the latest is always kept)."""
    names: list[str] = []
    for line in result.read_text().splitlines():
        try:
            name = json.loads(line).get("checkpoint_dir_name")
        except json.JSONDecodeError:  # a line being written
            continue
        if name:
            names.append(name)
    return [result.parent / name for name in names]


def _results(root: Path) -> list[Path]:
    return sorted(root.rglob(TUNE_RESULT)) if root.is_dir() else []


def _tagged_checkpoints(uri: str, experiment: str) -> list[Path]:
    """Local checkpoint folders the runs' `raysweep.checkpoint` tags name (a run on a
    remote store tags the store's path, e.g. `bucket/key`: not checked here)."""
    from raysweep.tracking import tags as tag

    paths = [r.data.tags.get(tag.CHECKPOINT) or "" for r in store_runs(uri, experiment)]
    return [Path(p) for p in paths if "://" not in p and Path(p).is_absolute()]


def _snapshots(folder: Path) -> list[Path]:
    return sorted(folder.rglob(SNAPSHOT)) if folder.is_dir() else []


def reported_checkpoints(folder: str | Path, uri: str | None = None, experiment: str = "probe") -> list[Path]:
    """Every checkpoint folder the records under `folder` (a run or sweep folder, on
    local disk) say must be there: those in Ray Train's snapshots, each Tune trial's
    latest, and the `raysweep.checkpoint` tags of the experiment's MLflow runs at
    `uri` (absolute local paths). Sorted, each once."""
    root = Path(folder)
    found: list[Path] = []
    for snapshot in _snapshots(root):
        found += _snapshot_checkpoints(snapshot)
    for result in _results(root):
        found += _tune_checkpoints(result)[-1:]
    if uri is not None:
        found += _tagged_checkpoints(uri, experiment)
    return sorted({p.resolve() for p in found})


def checkpoint_evidence(folder: str | Path, uri: str | None = None, experiment: str = "probe") -> CheckpointEvidence:
    """The reported checkpoints (see `reported_checkpoints`) checked on disk: each must
    be a folder that `raysweep.worker.checkpoint.load_state` loads. Read again if
    a Ray snapshot changed meanwhile (a live run prunes old checkpoints only after
    rewriting its snapshot), so a pruned checkpoint is not taken for a lost one."""
    from raysweep.worker.checkpoint import load_state

    root = Path(folder)
    for _ in range(20):
        before = [s.read_bytes() for s in _snapshots(root)]
        reported = reported_checkpoints(root, uri, experiment)
        missing, unloadable = [], []
        for path in reported:
            if not path.is_dir():
                missing.append(path)
                continue
            try:
                load_state(path)
            except Exception:  # refused (CorruptCheckpointError), or any other failure to load
                unloadable.append(path)
        named = set(reported) | {p.resolve() for result in _results(root) for p in _tune_checkpoints(result)}
        unreported = sorted(p.resolve() for p in root.rglob("checkpoint_*")
                            if p.is_dir() and p.resolve() not in named) if root.is_dir() else []
        if [s.read_bytes() for s in _snapshots(root)] == before:
            break
    return CheckpointEvidence(tuple(reported), tuple(missing), tuple(unloadable), tuple(unreported))


def checkpoint_epochs(folder: str | Path) -> dict[Path, int]:
    """The epoch each checkpoint in Ray Train's snapshots under `folder` was reported
    with (from the snapshot's metrics, so readable even when the file is torn)."""
    epochs: dict[Path, int] = {}
    for snapshot in _snapshots(Path(folder)):
        state = _json_file(snapshot)
        for entry in [*(state.get("checkpoint_results") or []), state.get("latest_checkpoint_result") or {}]:
            if entry.get("checkpoint_dir_name") and "epoch" in (entry.get("metrics") or {}):
                epochs[(snapshot.parent / entry["checkpoint_dir_name"]).resolve()] = int(entry["metrics"]["epoch"])
    return epochs


# --- MLflow runs ------------------------------------------------------------------


def store_runs(uri: str, experiment: str = "probe") -> list[Any]:
    """Every run the MLflow store at `uri` holds for `experiment`, deleted ones too
    (none if the experiment was never created)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                                  page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


@dataclass(frozen=True)
class RunsEvidence:
    """What the MLflow store holds for one experiment."""

    runs: int
    running: tuple[str, ...]
    """Names of the runs still RUNNING."""
    duplicates: int
    """Runs beyond one per identity (run key, or a trial's parameter set)."""


def mlflow_evidence(uri: str, experiment: str = "probe", trials_by: str = "key") -> RunsEvidence:
    """Runs read back from the store. A run's identity is its `raysweep.key` tag (one
    run per training run, sweep and trial); with `trials_by="params"`, a trial's is
    its sweep and sampled parameters instead, so a finished trial run again under a
    new trial id counts too (only where the space never repeats a parameter set)."""
    from raysweep.tracking import tags as tag

    if trials_by not in ("key", "params"):
        raise ValueError(f"trials_by: 'key' or 'params', not {trials_by!r}")
    runs = store_runs(uri, experiment)
    groups: dict[tuple[str, ...], int] = {}
    for run in runs:
        tags = run.data.tags
        key = tags.get(tag.KEY) or f"name:{run.info.run_name}"
        identity: tuple[str, ...] = ("key", key)
        if trials_by == "params" and tags.get(tag.KIND) == "trial":
            params = tags.get(tag.TRIAL_CONFIG) or json.dumps(run.data.params, sort_keys=True)
            identity = ("params", key.split("/", 1)[0], json.dumps(json.loads(params), sort_keys=True))
        groups[identity] = groups.get(identity, 0) + 1
    running = tuple(sorted(r.info.run_name or r.info.run_id for r in runs if r.info.status == "RUNNING"))
    return RunsEvidence(len(runs), running, sum(n - 1 for n in groups.values()))


# --- rows the probe trainer saw ---------------------------------------------------


def probe_row_ids(folder: str | Path) -> set[int]:
    """The `row_id` column of every Parquet file in `folder` (probe data)."""
    import pyarrow.parquet as pq

    ids: set[int] = set()
    for part in sorted(Path(folder).glob("*.parquet")):
        ids.update(int(v) for v in pq.read_table(part, columns=["row_id"]).column("row_id").to_pylist())
    return ids


def rows_seen(probe: str | Path, ranks: Iterable[int], epoch: int, split: str = "train") -> list[int] | None:
    """The row ids every rank's `{split}-rank{r}-epoch{e}.npy` holds (what the attempt
    that finished the epoch saw), or None when a rank's file is not there."""
    import numpy as np

    rows: list[int] = []
    for rank in ranks:
        path = Path(probe) / f"{split}-rank{rank}-epoch{epoch}.npy"
        if not path.is_file():
            return None
        rows += np.load(path).astype(np.int64).tolist()
    return rows


@dataclass(frozen=True)
class Step:
    pid: str
    epoch: int
    step: int
    ids: tuple[int, ...]


def steps_by_attempt(probe: str | Path, rank: int) -> dict[str, list[Step]]:
    """The probe's step log of one rank (`steps-rank{r}.log`: every step every attempt
    took), by attempt, attempts and steps in the order they ran. An attempt is a run
    of lines of one process whose (epoch, step) goes forward; its key is the process
    id, with `#2`, `#3`... when a process id comes back for a later attempt."""
    path = Path(probe) / f"steps-rank{rank}.log"
    attempts: dict[str, list[Step]] = {}
    current: list[Step] | None = None
    seen: dict[str, int] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        parts = line.split(" ")
        if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):  # a line cut short by a kill
            continue
        pid, epoch, step, ids = parts
        entry = Step(pid, int(epoch), int(step), tuple(int(i) for i in ids.split(",") if i.isdigit()))
        if not current or current[-1].pid != pid or (entry.epoch, entry.step) <= (current[-1].epoch,
                                                                                 current[-1].step):
            seen[pid] = seen.get(pid, 0) + 1
            current = attempts.setdefault(pid if seen[pid] == 1 else f"{pid}#{seen[pid]}", [])
        current.append(entry)
    return attempts


def first_steps(probe: str | Path, rank: int) -> dict[str, tuple[int, int]]:
    """Where each attempt of a rank started: (epoch, step). An attempt that loaded the
    checkpoint of epoch e starts at (e + 1, 0); a mid-epoch one at its cursor."""
    return {pid: (steps[0].epoch, steps[0].step) for pid, steps in steps_by_attempt(probe, rank).items()}


def rows_committed(probe: str | Path, ranks: Iterable[int], epoch: int) -> list[int]:
    """The rows that went into the model that finished `epoch`, from the step logs:
    for each rank, every attempt that took steps of the epoch keeps its steps before
    the step the next attempt started the epoch at (the checkpoint it resumed from);
    the last attempt keeps all of its steps."""
    rows: list[int] = []
    for rank in ranks:
        attempts = [[s for s in steps if s.epoch == epoch] for steps in steps_by_attempt(probe, rank).values()]
        attempts = [a for a in attempts if a]
        for i, steps in enumerate(attempts):
            cut = attempts[i + 1][0].step if i + 1 < len(attempts) else None
            rows += [r for s in steps if cut is None or s.step < cut for r in s.ids]
    return rows


def row_counts(rows_by_epoch: dict[int, Sequence[int] | None], expected: set[int]) -> dict[str, int]:
    """rows_repeated (rows taken more than once within an epoch, summed over epochs)
    and rows_missed (expected rows an epoch never took; an epoch without a record
    misses all of them)."""
    repeated = missed = 0
    for rows in rows_by_epoch.values():
        if rows is None:
            missed += len(expected)
            continue
        repeated += len(rows) - len(set(rows))
        missed += len(expected - set(rows))
    return {"rows_repeated": repeated, "rows_missed": missed}


# --- one case's figures -----------------------------------------------------------


def run_figures(uri: str, folder: str | Path, *, experiment: str = "probe",
                earlier: Sequence[CheckpointEvidence] = (), planted: Sequence[str | Path] = (),
                trials_by: str = "key", probe: str | Path | None = None, epochs: Iterable[int] = (),
                ranks: Iterable[int] = (0,), expected: set[int] | None = None,
                rows_from: str = "npy") -> dict[str, int]:
    """A fault case's measured figures, as `fault_figures` takes them:

    - checkpoints_reported / checkpoints_lost / checkpoints_unreported:
      `checkpoint_evidence(folder, uri)` now, lost also counting those lost in
      `earlier` evidence (e.g. taken at the kill), not counting `planted`
      (checkpoints the test damaged itself);
    - mlflow_running / duplicate_runs: `mlflow_evidence(uri, experiment, trials_by)`;
    - with `probe` (and `expected` row ids): rows_repeated / rows_missed over `epochs`
      from the probe's `.npy` files (`rows_from="npy"`) or step logs ("steps").
    """
    now = checkpoint_evidence(folder, uri, experiment)
    skip = {Path(p).resolve() for p in planted}
    lost = {p.resolve() for e in (*earlier, now) for p in e.lost} - skip
    runs = mlflow_evidence(uri, experiment, trials_by)
    figures = {"checkpoints_reported": len(now.reported), "checkpoints_lost": len(lost),
               "checkpoints_unreported": len(now.unreported), "mlflow_running": len(runs.running),
               "duplicate_runs": runs.duplicates}
    if probe is not None:
        if expected is None or rows_from not in ("npy", "steps"):
            raise ValueError("rows need `expected` row ids and rows_from 'npy' or 'steps'")
        ranks = list(ranks)
        read = rows_seen if rows_from == "npy" else rows_committed
        figures.update(row_counts({e: read(probe, ranks, e) for e in epochs}, expected))
    return figures
