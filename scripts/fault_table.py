"""The fault suite's tables in Markdown, from the figures `scripts/faults.sh` wrote.

    python scripts/fault_table.py docs/faults.json            # print them
    python scripts/fault_table.py docs/faults.json docs/faults.md   # replace them there

docs/faults.md holds them between `<!-- fault-table -->` and `<!-- /fault-table -->`;
tests/unit/test_fault_table.py checks that what is there is what this prints, so a
figure in the doc is always the one the runs left behind.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

START, END = "<!-- fault-table -->", "<!-- /fault-table -->"


def _group(case: str) -> str:
    """A case's family: parametrized cases of one test (e.g. the hostile inputs) as one."""
    return case.split("[", 1)[0] if case.startswith("test_hostile_input") else case


def tables(figures: dict) -> str:
    runs = max((int(c.get("runs", 0)) for c in figures["cases"]), default=0)
    passes: dict[str, list[int]] = {}
    for case in figures["cases"]:
        if "runs" in case:
            got = passes.setdefault(_group(case["case"]), [0, 0])
            got[0] += int(case.get("passed", 0))
            got[1] += int(case["runs"])
    every = sum(1 for passed, ran in passes.values() if passed == ran)
    sockets = figures.get("listening_sockets", [])
    last_sockets = sockets[-len(sockets) // max(runs, 1):] if sockets else []  # (each run lists them again)
    lines = [
        f"Runs of the suite: {runs}; pytest exit status {figures['pytest_exit_status']}; "
        f"{every} of {len(passes)} cases passed every run.",
        "",
        "| case | passed / runs |",
        "|---|---|",
        *(f"| `{case}` | {passed} / {ran} |" for case, (passed, ran) in passes.items()),
        "",
        f"| figure (summed over the {runs} runs) | value | target |",
        "|---|---|---|",
        f"| faults injected / survived / handled as expected (retry budget exceeded) / neither | "
        f"{figures['faults_injected']} / {figures['faults_survived']} / {figures['handled_as_expected']} / "
        f"{figures['faults_not_survived_or_handled']} | neither 0 |",
        f"| checkpoints reported / lost / on disk but never reported | {figures['checkpoints_reported']} / "
        f"{figures['checkpoints_lost']} / {figures['checkpoints_unreported']} | lost 0 |",
        f"| trials re-run, duplicate MLflow runs, MLflow runs left RUNNING | {figures['trials_rerun']}, "
        f"{figures['duplicate_runs']}, {figures['mlflow_running']} | 0 |",
        f"| trials not finished / missing epochs after a cross-host fault | {figures['trials_not_finished']} / "
        f"{figures.get('trials_missing_epochs', 0)} | 0 |",
        f"| failures spent by a preemption | {figures.get('failures_spent', 0)} | 0 |",
        f"| rows repeated / missed after a mid-epoch kill; rows trained twice across a drain | "
        f"{figures['rows_repeated']} / {figures['rows_missed']}; {figures['rows_taken_twice']} | 0 |",
        f"| torn checkpoints loaded, pickle payloads run | {figures['torn_checkpoints_loaded']}, "
        f"{figures['unsafe_payloads_run']} | 0 |",
        f"| change in final metrics after recovery (max relative) | {figures['max_final_metric_change_rel']} | 0 |",
        f"| two-worker trials beside a CPU hog / lost to placement-group removal | {figures['stress_trials']} / "
        f"{figures['trials_lost_to_pg_removal']} | 0 lost |",
        f"| bad inputs tried / given the wrong treatment | {figures['bad_inputs_tried']} / "
        f"{figures['bad_inputs_wrong']} | 0 wrong |",
        f"| job API endpoints asked without the token / that accepted | {figures['job_apis_tried']} / "
        f"{figures['unauthenticated_job_apis']} | 0 |",
        f"| single-node clusters' listening sockets beyond loopback (`cluster up`; in-process) | "
        f"{figures['single_node_beyond_loopback']}; {figures['in_process_beyond_loopback']} | 0 |",
        f"| listening sockets of a 3-node cluster + MLflow server (the last run) / beyond loopback | "
        f"{len(last_sockets)} / {sum(not s['loopback_only'] for s in last_sockets)} (Ray-internal: GCS, raylets, "
        "agents, Ray Client; see docs/security.md) | |",
        "",
        "Recovery (fault -> the run reports again), the last run: "
        + ", ".join(f"`{case}` {seconds} s" for case, seconds in figures["recovery_s"].items()) + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    figures = json.loads(Path(sys.argv[1]).read_text())
    text = tables(figures)
    if len(sys.argv) < 3:
        print(text)
        return
    doc = Path(sys.argv[2])
    body = doc.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(body):
        raise SystemExit(f"{doc}: no {START} ... {END} block to replace")
    doc.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", body))


if __name__ == "__main__":
    main()
