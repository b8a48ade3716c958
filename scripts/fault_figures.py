"""Sum the per-case fault figures (JSON lines) into one JSON file and print it.

    python scripts/fault_figures.py LINES.jsonl OUT.json PYTEST_EXIT_STATUS

A case writes several lines (its fault when injected, its measured evidence, then
what it survived): they are merged into one entry per case, counts added up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COUNTS = ("faults_injected", "faults_survived", "handled_as_expected", "checkpoints_reported", "checkpoints_lost",
          "checkpoints_unreported", "trials_rerun", "mlflow_running", "duplicate_runs", "rows_repeated", "rows_missed",
          "torn_checkpoints_loaded", "unsafe_payloads_run", "bad_inputs_tried", "bad_inputs_wrong",
          "job_apis_tried", "unauthenticated_job_apis", "single_node_beyond_loopback", "in_process_sockets",
          "in_process_beyond_loopback", "stress_trials", "trials_lost_to_pg_removal", "trials_not_finished",
          "rows_taken_twice", "trials_missing_epochs", "failures_spent", "runs", "passed")


def merge(records: list[dict]) -> list[dict]:
    """One entry per case, in the order cases first wrote: counts (ints) added up,
    lists joined, any other field the last one written."""
    cases: dict[str, dict] = {}
    for record in records:
        case = cases.setdefault(record["case"], {"case": record["case"]})
        for key, value in record.items():
            if key == "case":
                continue
            if isinstance(value, int) and not isinstance(value, bool) and isinstance(case.get(key, 0), int):
                case[key] = case.get(key, 0) + value
            elif isinstance(value, list) and isinstance(case.get(key), list):
                case[key] = case[key] + value
            else:
                case[key] = value
    return list(cases.values())


def main() -> None:
    lines, out, status = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    cases = merge([json.loads(line) for line in lines.read_text().splitlines() if line.strip()])
    summary: dict = {k: sum(int(c.get(k, 0)) for c in cases) for k in COUNTS}
    # Faults a run is meant to die of (the retry budget exceeded) count as handled, not survived;
    # a case that fails after injecting its fault adds to injected but not to survived/handled.
    summary["faults_not_survived_or_handled"] = (summary["faults_injected"] - summary["faults_survived"]
                                                 - summary["handled_as_expected"])
    changes = [c["metric_change"] for c in cases if "metric_change" in c]
    summary["max_final_metric_change_rel"] = max(changes) if changes else None
    recoveries = {c["case"]: round(c["recovery_s"], 1) for c in cases if "recovery_s" in c}
    summary["recovery_s"] = recoveries
    sockets = [s for c in cases for s in c.get("sockets", [])]
    summary["listening_sockets"] = sockets  # the multi-node exposure case (case 10)
    single = [s for c in cases for s in c.get("single_node_sockets", [])]
    summary["single_node_sockets"] = single  # `cluster up` single-node clusters: expected all loopback
    summary["cases_recorded"] = len(cases)
    # Per case: passed/runs (tests/conftest.py records both for every case that records figures).
    summary["pass_counts"] = {c["case"]: f"{c.get('passed', 0)}/{c.get('runs', 0)}" for c in cases}
    summary["cases_passed_every_run"] = sum(1 for c in cases if c.get("runs") and c.get("passed") == c["runs"])
    summary["pytest_exit_status"] = status
    summary["cases"] = cases
    out.write_text(json.dumps(summary, indent=2))
    tables = ("cases", "listening_sockets", "single_node_sockets")
    print(json.dumps({k: v for k, v in summary.items() if k not in tables}, indent=2))
    print(f"{len(sockets)} listening sockets of the multi-node cluster and {len(single)} of single-node clusters "
          f"({sum(not s['loopback_only'] for s in single)} beyond loopback) listed; all figures in {out}")


if __name__ == "__main__":
    main()
