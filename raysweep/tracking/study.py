"""The sweep's Optuna study, stored durably beside the sweep (no Ray): the searcher
writes it, the report and a resumed sweep read it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from raysweep.config.load import base_dir, resolve_path
from raysweep.errors import UserInputError

STUDY_FILE = "optuna.journal"


def study_dir(sweep_dir: str, study_name: str) -> str:
    """Where the study's journal lives: the sweep's folder, or, when that is an
    s3:// / gs:// URI, the same layout under ./results on the driver (the journal
    needs a local file with locking). A driver that is a Ray job keeps it under the
    raysweep state folder (~/.raysweep/journals) instead: the job's working dir is a
    per-job path that Ray deletes and unpacks again, and a later job resuming the sweep
    (on a new head, say) has another one."""
    if "://" not in sweep_dir:
        return sweep_dir
    relative = f"{study_name}/{sweep_dir.rstrip('/').rsplit('/', 1)[-1]}"
    if "runtime_resources" in base_dir().parts:
        from raysweep.cluster.auth import state_dir

        return str(state_dir() / "journals" / relative)
    return resolve_path(f"results/{relative}")


def _remote_journal(sweep_dir: str) -> tuple[object, str]:
    from raysweep.data.storage import filesystem  # (pyarrow's object stores: only for URI sweeps)

    return filesystem(f"{sweep_dir.rstrip('/')}/{STUDY_FILE}")


def push_study(sweep_dir: str, study_name: str) -> None:
    """A sweep on object storage: copy the driver's journal up beside the sweep (after
    every trial event), so the study outlives the driver's disk (a lost head node or
    pod). Local sweeps keep the journal in their folder already."""
    if "://" not in sweep_dir:
        return
    local = Path(study_dir(sweep_dir, study_name)) / STUDY_FILE
    if not local.is_file():
        return
    fs, path = _remote_journal(sweep_dir)
    with fs.open_output_stream(path) as out:  # type: ignore[attr-defined]
        out.write(local.read_bytes())


def pull_study(sweep_dir: str, study_name: str) -> bool:
    """A resumed sweep on object storage: the bucket's journal, when it is longer than
    the driver's copy (journals only grow; a new machine has none). Returns whether
    it was fetched."""
    if "://" not in sweep_dir:
        return False
    local = Path(study_dir(sweep_dir, study_name)) / STUDY_FILE
    fs, path = _remote_journal(sweep_dir)
    try:
        with fs.open_input_stream(path) as stream:  # type: ignore[attr-defined]
            remote = stream.read()
    except FileNotFoundError:
        return False
    if local.is_file() and local.stat().st_size >= len(remote):
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_suffix(".tmp")
    tmp.write_bytes(remote)
    tmp.replace(local)
    return True


def check_journal(sweep_dir: str, study_name: str) -> str | None:
    """A resumed sweep's journal, checked before anything starts (for a sweep on object
    storage, the bucket's copy is fetched first). Raises UserInputError, naming the file
    and line, when a record is not a journal record or the study is not in it. A last
    record cut off mid-write (a driver killed while writing it, which Optuna skips on
    read but would then append after, corrupting the next record) is dropped, the
    original kept beside the journal; returns a one-line note saying so, else None."""
    import json

    pull_study(sweep_dir, study_name)
    path = Path(study_dir(sweep_dir, study_name)) / STUDY_FILE
    if not path.is_file():
        raise UserInputError(f"{path}: no Optuna journal: the sweep cannot be resumed (start a new one)")
    data = path.read_bytes()
    complete, _, torn = data.rpartition(b"\n")
    lines = complete.split(b"\n") if complete else []
    created = False
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UserInputError(f"{path}: line {number}: not an Optuna journal record ({exc}): the journal is "
                                 "corrupt; restore it from a copy or start a new sweep") from None
        created |= isinstance(record, dict) and record.get("op_code") == 0 and record.get("study_name") == study_name
    if not created:
        raise UserInputError(f"{path}: the study {study_name!r} is not in the journal (empty or another sweep's): "
                             "the sweep cannot be resumed (start a new one)")
    if not torn:
        return None
    kept = path.with_name(f"{STUDY_FILE}.torn-{int(time.time())}")
    kept.write_bytes(data)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(complete + b"\n")
    tmp.replace(path)
    return (f"{path}: its last record was cut off mid-write ({len(torn)} bytes, a driver stopped while writing "
            f"it): dropped, that trial event is lost and the trial runs again; the original is kept in {kept}")


def study_exists(sweep_dir: str, study_name: str) -> bool:
    """Whether the sweep in `sweep_dir` left a study (its journal locally or, for a
    sweep on object storage, in the bucket)."""
    if (Path(study_dir(sweep_dir, study_name)) / STUDY_FILE).is_file():
        return True
    if "://" not in sweep_dir:
        return False
    fs, path = _remote_journal(sweep_dir)
    return fs.get_file_info(path).is_file  # type: ignore[attr-defined]


def study_storage(sweep_dir: str) -> JournalStorage:
    """The durable Optuna storage of a sweep: a journal file in its folder."""
    path = Path(sweep_dir) / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load_study(sweep_dir: str, study_name: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=study_storage(sweep_dir))


def fail_stale_trials(sweep_dir: str, study_name: str) -> int:
    """Optuna trials still RUNNING when a sweep ends were lost with a crashed driver:
    mark them FAIL so the study holds no stale RUNNING trial. Returns how many."""
    study = load_study(study_dir(sweep_dir, study_name), study_name)
    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


WARM_START_ATTR = "raysweep.warm_start_from"
TUNE_TRIAL_ATTR = "raysweep.tune_trial_id"
RUNG_ATTR = "raysweep.drawn_at_rung"
"""sampler.rungs: the epoch whose values the trial's params were drawn from (None:
too few trials at every epoch, drawn from the study as it was)."""
"""User attribute naming the Tune trial an Optuna trial belongs to (the journal alone
then says which Tune trial is which Optuna trial)."""


def warm_start_marks(study: optuna.Study) -> tuple[dict[str, str], int]:
    """({Tune trial id: the sweep it was enqueued from} for the warm start's configs
    that ran in this sweep, how many earlier trials were added to the study)."""
    enqueued = {t.user_attrs[TUNE_TRIAL_ATTR]: str(t.user_attrs[WARM_START_ATTR]).removesuffix(" (enqueued)")
                for t in study.trials if TUNE_TRIAL_ATTR in t.user_attrs and WARM_START_ATTR in t.user_attrs}
    added = sum(1 for t in study.trials if WARM_START_ATTR in t.user_attrs and TUNE_TRIAL_ATTR not in t.user_attrs)
    return enqueued, added


def drawable(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether `distribution` can draw `value` (from its public fields: a choice, or a
    number within [low, high] on its step)."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        try:
            distribution.to_internal_repr(value)  # (Optuna's own match of a value to a choice)
        except ValueError:
            return False
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
    step = getattr(distribution, "step", None)
    if not low <= value <= high:
        return False
    if step is None:
        return True
    k = (value - low) / step
    return abs(k - round(k)) < 1e-8


def seed_study(sweep_dir: str, study_name: str, source_dir: str, source_id: str, space: dict,
               directions: list[str], top_k: int, required: set[str] | None = None,
               open_space: bool = False) -> tuple[int, int]:
    """Warm start: the finished trials of the sweep in `source_dir` whose params lie in
    `space` (Optuna distributions) added to this sweep's study (marked with
    WARM_START_ATTR), and its best `top_k` configs enqueued to run first. A trial must
    have every param of `required` (default: all of `space`; a conditional param may be
    absent); with `open_space` (a space function draws more) it may have params beyond
    `space`. Returns (trials added, configs enqueued)."""
    required = set(space) if required is None else required

    def fits(t: optuna.trial.FrozenTrial) -> bool:
        return required <= set(t.params) and all(
            drawable(space[k], v) if k in space else open_space for k, v in t.params.items())

    pull_study(source_dir, study_name)
    source = load_study(study_dir(source_dir, study_name), study_name)
    finished = [t for t in source.trials if t.state == optuna.trial.TrialState.COMPLETE
                and t.values is not None and len(t.values) == len(directions) and fits(t)]
    study = optuna.create_study(storage=study_storage(study_dir(sweep_dir, study_name)), study_name=study_name,
                                directions=directions, load_if_exists=True)  # type: ignore[arg-type]
    # (with the earlier trial's constraint values, which the samplers read)
    study.add_trials([optuna.trial.create_trial(params=t.params, values=t.values,
                                                intermediate_values=t.intermediate_values,  # (sampler.rungs reads them)
                                                distributions={k: space.get(k, t.distributions[k]) for k in t.params},
                                                user_attrs={WARM_START_ATTR: source_id},
                                                system_attrs={k: v for k, v in t.system_attrs.items()
                                                              if k.split(":")[0] == "constraints"})
                      for t in finished])
    # Best first by the first objective.
    maximize = directions[0] == "maximize"
    best = sorted(finished, key=lambda t: float(t.values[0]), reverse=maximize)[:top_k]
    for trial in best:
        study.enqueue_trial(trial.params, user_attrs={WARM_START_ATTR: f"{source_id} (enqueued)"})
    return len(finished), len(best)
