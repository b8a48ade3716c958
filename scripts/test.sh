#!/usr/bin/env bash
# Install what the tests need, check the engine's types and lint, and run the tests
# tier by tier, each tier in a pytest of its own (folder = tier, tests/conftest.py):
#   unit     tests/unit          no subprocess, no server, no Ray
#   ray      tests/integration   processes, servers and the one shared local Ray cluster
#   cluster  tests/cluster       Ray clusters and hosts of their own
#   fault    tests/faults        fault injection
# The tiers run in groups, one group after the other; the tiers of a group run at the
# same time (their clusters, servers, ports, HOME and temp folders are their own, and
# much of a cluster tier's time is spent waiting on processes it started). TIER:K/N is
# the K-th of N parts of a tier (pytest --shard, tests/conftest.py: its files split by
# their usual time), each a pytest with its own cluster and servers. A tier's
# output is printed when it ends. At the end, one line per tier: its wall time and
# counts. A failing tier does not stop the others; the script fails if any tier failed.
#   scripts/test.sh [pytest args]          every tier (what CI runs, .ci/run)
#   scripts/test.sh --fast [pytest args]   the unit tier only
#   scripts/test.sh --serial [pytest args] every tier, one at a time
set -euo pipefail
cd "$(dirname "$0")/.."
groups=("unit ray:1/2 ray:2/2" "cluster fault")
case "${1:-}" in
  --fast) groups=("unit"); shift ;;
  --serial) groups=("unit" "ray" "cluster" "fault"); shift ;;
esac
scripts/setup_env.sh
.venv/bin/ruff check raysweep benchmarks trainers scripts tests

all_started=$SECONDS
logs="$(mktemp -d)"
# mypy (one core) beside the first group (the unit tier: one core); waited for after it.
.venv/bin/mypy >"$logs/mypy" 2>&1 &
mypy_pid=$!
# Ctrl-C reaches every running pytest (one process group): each stops and tears down
# what it started; this script waits for that before it leaves.
trap 'wait 2>/dev/null; rm -rf "$logs"' EXIT

log_of() {  # log_of TIER[:K/N] -> the name of its log in $logs
  echo "${1//[:\/]/-}"
}

run_tier() {  # run_tier TIER[:K/N] ARGS...: pytest of one tier (or part); output in $logs/NAME, exit status in NAME.rc
  local tier=${1%%:*} log started=$SECONDS rc=0 shard=()
  log=$(log_of "$1")
  [[ $1 == *:* ]] && shard=(--shard="${1#*:}")
  shift
  trap - INT  # (a background job of a script may start with Ctrl-C ignored)
  .venv/bin/python -m pytest -q --durations=25 --tier="$tier" "${shard[@]}" "$@" >"$logs/$log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - started))" >"$logs/$log.rc"
}

lines=()
failed=0
ran=0
for group in "${groups[@]}"; do
  read -ra tiers <<<"$group"
  pids=()
  for tier in "${tiers[@]}"; do
    run_tier "$tier" "$@" &
    pids+=($!)
  done
  echo "=== tiers at once: ${tiers[*]}"
  stopped=0
  for i in "${!tiers[@]}"; do
    tier=${tiers[$i]}
    log=$(log_of "$tier")
    wait "${pids[$i]}" || true
    read -r rc took <"$logs/$log.rc"
    echo "=== tier $tier"
    cat "$logs/$log"
    # pytest's last line: "3 failed, 560 passed, 1 skipped, 130 deselected, 4 warnings in 58.66s (0:00:58)"
    counts="$(grep -E '^=* ?([0-9]+ [a-z]+(, )?)+ in [0-9.]+s|no tests ran' "$logs/$log" | tail -1 \
      | sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s.*//; s/[0-9]+ (deselected|warnings?)(, )?//g; s/, $//')" || true
    case $rc in
      0) verdict=ok; ran=1 ;;
      5) verdict="no tests" ;;  # none of this tier's tests selected (e.g. -k or a path of another tier)
      2) verdict="STOPPED (pytest exit 2: Ctrl-C or a collection error)"; failed=1; stopped=1 ;;  # no further group
      *) verdict="FAILED (pytest exit $rc)"; failed=1; ran=1 ;;
    esac
    lines+=("$(printf '  %-9s %3d min %02d s   %-40s %s' "$tier" $((took / 60)) $((took % 60)) \
      "${counts:-none selected}" "$verdict")")
  done
  [ "$stopped" = 0 ] || break
done

mypy_rc=0
wait "$mypy_pid" || mypy_rc=$?
echo "=== mypy"
cat "$logs/mypy"
if [ "$mypy_rc" = 0 ]; then
  lines+=("  mypy      $(tail -1 "$logs/mypy")")
else
  lines+=("  mypy      FAILED: $(tail -1 "$logs/mypy")")
  failed=1
fi

echo
echo "Tiers (wall time, counts; the tiers of a group ran at the same time):"
for group in "${groups[@]}"; do echo "  group: $group"; done
printf '%s\n' "${lines[@]}"
took=$((SECONDS - all_started))
printf '  %-8s %3d min %02d s\n' tiers $((took / 60)) $((took % 60))
printf '  %-8s %3d min %02d s   (the install check, lint and types included)\n' total $((SECONDS / 60)) \
  $((SECONDS % 60))
if [ "$failed" != 0 ]; then
  exit 1
elif [ "$ran" = 0 ]; then
  exit 5  # as pytest: no test ran
fi
