#!/usr/bin/env bash
# Install what the tests need, check the engine's types and lint, and run the tests
# (unit tests, then integration tests on one shared local Ray cluster).
#   scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/ruff check raysweep trainers scripts tests
.venv/bin/mypy
exec .venv/bin/python -m pytest -q --durations=25 "$@"
