"""A resumed sweep's Optuna journal is checked before anything starts
(tracking.study.check_journal): a corrupt record or a missing study is refused in one
line naming the file; a last record cut off mid-write is dropped, said, and the
original kept, so the resumed sweep's own records do not land behind it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from raysweep.cli import main
from raysweep.errors import UserInputError
from raysweep.tracking.study import STUDY_FILE, check_journal, load_study, study_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sweep(folder: Path, name: str = "probe", trials: int = 3) -> Path:
    """A sweep folder whose journal Optuna wrote: `trials` finished trials."""
    study = optuna.create_study(study_name=name, storage=study_storage(str(folder)))
    for value in range(trials):
        trial = study.ask()
        trial.suggest_float("lr", 0.01, 0.5)
        study.tell(trial, float(value))
    return folder / STUDY_FILE


def test_a_whole_journal_passes_unchanged(tmp_path):
    journal = _sweep(tmp_path)
    before = journal.read_bytes()
    assert check_journal(str(tmp_path), "probe") is None
    assert journal.read_bytes() == before


def test_a_record_cut_off_at_the_end_is_dropped_and_the_original_kept(tmp_path):
    journal = _sweep(tmp_path)
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-20])  # (the driver stopped while writing the last tell)
    note = check_journal(str(tmp_path), "probe")
    assert note is not None and "cut off mid-write" in note and "\n" not in note
    (kept,) = tmp_path.glob(f"{STUDY_FILE}.torn-*")
    assert kept.read_bytes() == whole[:-20] and journal.read_bytes().endswith(b"\n")
    # The resumed sweep appends and the journal still reads: every record but the cut one.
    study = load_study(str(tmp_path), "probe")
    assert [t.state for t in study.trials][:2] == [optuna.trial.TrialState.COMPLETE] * 2
    study.tell(study.ask(), 9.0)
    assert len(load_study(str(tmp_path), "probe").trials) == 4


def test_without_the_check_a_cut_record_corrupts_the_next_one(tmp_path):
    """Why the cut record is dropped: Optuna skips it on read and appends after it; the
    record it appends shares the cut one's line, and the next trial the resumed sweep
    asks for fails (Optuna 5: it cannot read back the trial it just created)."""
    journal = _sweep(tmp_path)
    journal.write_bytes(journal.read_bytes()[:-20])
    study = load_study(str(tmp_path), "probe")
    with pytest.raises((ValueError, AttributeError)):
        study.tell(study.ask(), 9.0)


@pytest.mark.parametrize("damage, says", [
    (lambda data: data.replace(b"\n", b"\n{not json\n", 1), "line 2: not an Optuna journal record"),
    (lambda data: b"", "is not in the journal"),
])
def test_a_corrupt_or_empty_journal_is_refused_naming_the_file(tmp_path, damage, says):
    journal = _sweep(tmp_path)
    journal.write_bytes(damage(journal.read_bytes()))
    with pytest.raises(UserInputError) as refused:
        check_journal(str(tmp_path), "probe")
    assert str(refused.value).startswith(str(journal)) and says in str(refused.value)


def test_another_sweeps_journal_is_refused(tmp_path):
    _sweep(tmp_path, name="other")
    with pytest.raises(UserInputError, match="the study 'probe' is not in the journal"):
        check_journal(str(tmp_path), "probe")


def test_tune_resume_refuses_a_corrupt_journal_before_ray_starts(tmp_path, write_spec, capsys):
    spec = write_spec()
    sweep = tmp_path / "results" / "probe" / "probe-20261207-120000-0a1b2c3d"
    (sweep / "tune").mkdir(parents=True)
    journal = _sweep(sweep)
    journal.write_bytes(journal.read_bytes().replace(b"\n", b"\n{not json\n", 1))
    assert main(["tune", str(spec), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(journal) in err and "line 2: not an Optuna journal record" in err
