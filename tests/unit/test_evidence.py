"""The fault figures' MLflow evidence (raysweep.testing.evidence.mlflow_evidence) on a
store written here; the helpers on a real run, with losses planted in it:
tests/faults/test_fault_evidence.py."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from raysweep.testing.evidence import mlflow_evidence


def test_a_trial_run_again_under_a_new_id_counts_by_parameters(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("probe")
    for trial in ("aaaa0001", "aaaa0002", "aaaa0003"):
        lr = "0.5" if trial == "aaaa0003" else "0.1"  # 0002 is 0001 again, under a new trial id
        run = client.create_run(exp, run_name=trial, tags={
            "raysweep.key": f"probe-1/{trial}", "raysweep.kind": "trial", "raysweep.trial_config": f'{{"lr": {lr}}}'})
        client.set_terminated(run.info.run_id, "FINISHED")
    assert mlflow_evidence(uri).duplicates == 0
    assert mlflow_evidence(uri, trials_by="params").duplicates == 1
    assert mlflow_evidence(f"sqlite:///{tmp_path / 'empty.db'}").runs == 0
