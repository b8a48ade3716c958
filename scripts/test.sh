#!/usr/bin/env bash
# Install what the tests need and run them (unit tests, then integration tests on
# one shared local Ray cluster).
#   scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "$@"
