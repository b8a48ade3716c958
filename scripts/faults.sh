#!/usr/bin/env bash
# The fault-injection suite on its own, with its figures:
#   scripts/faults.sh [OUT.json [RUNS]]     (default: faults.json, 1 run)
# Runs the fault cases of the test suite RUNS times (real SIGKILLs of workers, drivers
# and a node; a drain notice on a node under a training run and under a sweep trial,
# as for a spot reclaim; torn and unsafe
# checkpoints; a corrupt or cut-off Optuna journal at --resume; out-of-memory and NaN trials; the hostile-input corpus;
# 3,000 generated specs, mutated specs and mutated data sets each (Hypothesis, seeded); the exposure
# report; the loopback-only socket tables of single-node clusters; 20 two-worker
# trials beside a CPU hog; across hosts that share nothing: the head host killed with
# its disk wiped mid-sweep, then resumed from the bucket; the S3 and tracking servers
# each stopped for 20 s; a worker host cut off the network; a worker host drained and
# powered off; a tracking server stopped past MLflow's own retries; an elastic run grown by a
# joining node and shrunk by its loss), then sums the
# figures every case recorded, with each case's passed/runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-faults.json}"
runs="${2:-1}"
lines="$(mktemp)"
trap 'rm -f "$lines"' EXIT
scripts/setup_env.sh >/dev/null
status=0
for run in $(seq "$runs"); do
  echo "fault suite run $run of $runs"
  RAYSWEEP_FAULTS_OUT="$lines" RAYSWEEP_GENERATED_CASES=3000 .venv/bin/python -m pytest -q -p no:cacheprovider -m "slow or not slow" \
    tests/unit/test_hostile_input.py tests/unit/test_trainer.py tests/faults/test_torn_checkpoints.py \
    tests/unit/test_journal_check.py tests/unit/test_generated_input.py \
    tests/faults/test_faults.py \
    tests/integration/test_worker_groups.py::test_twenty_two_worker_trials_beside_a_cpu_hog_lose_none \
    tests/integration/test_in_process_isolation.py tests/faults/test_cluster_faults.py \
    tests/faults/test_cluster_preemption.py tests/faults/test_tracking_outage.py tests/faults/test_elastic.py \
    tests/faults/test_storage_full.py \
    tests/cluster/test_cluster_isolation.py \
    tests/faults/test_cross_host.py || status=$?
done
.venv/bin/python scripts/fault_figures.py "$lines" "$out" "$status"
exit "$status"
