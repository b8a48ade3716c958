"""The sweep's Optuna study, stored durably beside the sweep (no Ray): the searcher
writes it, the report and a resumed sweep read it."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from raysweep.config.load import resolve_path

STUDY_FILE = "optuna.journal"


def study_dir(sweep_dir: str, study_name: str) -> str:
    """Where the study's journal lives: the sweep's folder, or, when that is an
    s3:// / gs:// URI, the same layout under ./results on the driver (the journal
    needs a local file with locking)."""
    if "://" not in sweep_dir:
        return sweep_dir
    return resolve_path(f"results/{study_name}/{sweep_dir.rstrip('/').rsplit('/', 1)[-1]}")


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
