#!/usr/bin/env bash
# Install what the tests need, check the engine's types and lint, and run the tests
# tier by tier, each tier in a pytest of its own (folder = tier, tests/conftest.py):
#   unit     tests/unit          no subprocess, no server, no Ray
#   ray      tests/integration   processes, servers and the one shared local Ray cluster
#   cluster  tests/cluster       Ray clusters and hosts of their own
#   fault    tests/faults        fault injection
# At the end, one line per tier: its wall time and counts. A failing tier does not
# stop the next ones; the script fails if any tier failed.
#   scripts/test.sh [pytest args]          every tier (what CI runs, .ci/run)
#   scripts/test.sh --fast [pytest args]   the unit tier only
set -euo pipefail
cd "$(dirname "$0")/.."
tiers=(unit ray cluster fault)
if [ "${1:-}" = "--fast" ]; then
  tiers=(unit)
  shift
fi
scripts/setup_env.sh
.venv/bin/ruff check raysweep trainers scripts tests
.venv/bin/mypy

all_started=$SECONDS
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
lines=()
failed=0
ran=0
for tier in "${tiers[@]}"; do
  echo "=== tier $tier"
  started=$SECONDS
  rc=0
  .venv/bin/python -m pytest -q --durations=25 --tier="$tier" "$@" 2>&1 | tee "$logs/$tier" || rc=$?
  took=$((SECONDS - started))
  # pytest's last line: "3 failed, 560 passed, 1 skipped, 130 deselected, 4 warnings in 58.66s (0:00:58)"
  counts="$(grep -E '^=* ?([0-9]+ [a-z]+(, )?)+ in [0-9.]+s|no tests ran' "$logs/$tier" | tail -1 \
    | sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s.*//; s/[0-9]+ (deselected|warnings?)(, )?//g; s/, $//')" || true
  case $rc in
    0) verdict=ok; ran=1 ;;
    5) verdict="no tests" ;;  # none of this tier's tests selected (e.g. -k or a path of another tier)
    2) verdict="STOPPED (pytest exit 2: Ctrl-C or a collection error)"; failed=1 ;;  # the next tiers too
    *) verdict="FAILED (pytest exit $rc)"; failed=1; ran=1 ;;
  esac
  lines+=("$(printf '  %-8s %3d min %02d s   %-40s %s' "$tier" $((took / 60)) $((took % 60)) \
    "${counts:-none selected}" "$verdict")")
  [ "$rc" != 2 ] || break
done

echo
echo "Tiers (wall time, counts):"
printf '%s\n' "${lines[@]}"
took=$((SECONDS - all_started))
printf '  %-8s %3d min %02d s\n' total $((took / 60)) $((took % 60))
if [ "$failed" != 0 ]; then
  exit 1
elif [ "$ran" = 0 ]; then
  exit 5  # as pytest: no test ran
fi
