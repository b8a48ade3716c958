#!/usr/bin/env bash
# The wheel as a user gets it: build it from this checkout, install it non-editable
# into a clean venv with the pinned versions, and run a project outside the repo
# (tests/outside_project: its own trainers/ package, spec and data) with it:
# `raysweep --version`, `raysweep check` and a 2-trial sweep, then count the sweep's
# finished trials in its MLflow store. CI runs it (.ci/run); exits non-zero on failure.
#   scripts/wheel_check.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python3}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
# Built from a copy of the tracked files: setuptools leaves build/ where it builds.
git -C "$repo" ls-files -z | (cd "$repo" && tar --null -T - -cf -) | (mkdir -p "$work/src" && tar -xf - -C "$work/src")
"$py" -m pip wheel -q --no-deps -w "$work/dist" "$work/src"
wheel=("$work"/dist/raysweep-*.whl)
# Only the engine: no top-level trainers/ (it would shadow a project's own).
others=$("$py" -c "import sys, zipfile; print(' '.join(sorted({n.split('/')[0] for n in zipfile.ZipFile(sys.argv[1]).namelist()} - {'raysweep'} - {n for n in {n.split('/')[0] for n in zipfile.ZipFile(sys.argv[1]).namelist()} if n.endswith('.dist-info')})))" "${wheel[0]}")
if [ -n "$others" ]; then echo "wheel_check: the wheel holds top-level entries besides raysweep: $others" >&2; exit 1; fi
"$py" -m pip install -q -c "$repo/constraints.txt" "${wheel[0]}"

project="$work/project"
cp -r "$repo/tests/outside_project" "$project"
cd "$project"
export HOME="$work/home" RAYSWEEP_STATE_DIR="$work/home/.raysweep"
unset RAY_ADDRESS RAY_AUTH_TOKEN RAY_AUTH_TOKEN_PATH MLFLOW_TRACKING_URI RAYSWEEP_BASE_DIR
mkdir -p "$HOME"
installed=$("$py" -c "import raysweep, sys; print(raysweep.__file__)")
case "$installed" in "$work/venv/"*) ;; *) echo "wheel_check: raysweep imported from $installed" >&2; exit 1;; esac
"$work/venv/bin/raysweep" --version
"$py" make_data.py data
"$work/venv/bin/raysweep" check sweep.yaml
"$work/venv/bin/raysweep" tune sweep.yaml --no-report
"$py" - <<'PY'
import json, mlflow, raysweep
from pathlib import Path
runs = mlflow.search_runs(experiment_names=["outside"], output_format="list")
trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
finished = [r for r in trials if r.info.status == "FINISHED" and "val_loss" in r.data.metrics]
records = list(Path("results").rglob("record.json"))
recorded = {json.loads(p.read_text())["versions"]["raysweep"] for p in records}
print(f"wheel_check: {len(finished)} of {len(trials)} trials finished with val_loss; "
      f"records {len(records)}, raysweep version recorded {sorted(recorded)}")
assert len(finished) == 2, "expected the 2 trials of sweep.yaml to finish"
assert recorded == {raysweep.__version__}, recorded
PY
echo "wheel_check: passed"
