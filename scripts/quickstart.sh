#!/usr/bin/env bash
# The whole thing on a laptop: install, write the digits data set to Parquet, and
# run an 8-trial Optuna (TPE) + ASHA sweep (one-worker trials) on a local Ray
# cluster, logged to MLflow in ./mlflow.db.
#   scripts/quickstart.sh [extra raysweep tune args, e.g. --set budget.num_trials=4]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/python scripts/prepare_data.py --out data/digits
.venv/bin/raysweep check search_spaces/digits_mlp.yaml
exec .venv/bin/raysweep tune search_spaces/digits_mlp.yaml "$@"
