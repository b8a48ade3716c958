#!/usr/bin/env bash
# Create .venv (if missing) and install raysweep with the pinned versions CI tests.
#   scripts/setup_env.sh            # runtime + test dependencies
# Re-running is cheap: pip skips what is already installed.
# The test extra includes psycopg2-binary, boto3 and Flask-WTF: the server side of
# tests/integration/test_team_mlflow.py (mlflow server on PostgreSQL, S3 artifacts,
# basic auth). PostgreSQL itself is the system's: Debian's package, installed below when
# missing and apt-get can (root); without it that test is skipped (failed under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
# tests/cluster/test_shared_nothing.py: hosts in namespaces, each with an sshd, and the
# cluster launcher's rsync (skipped without them; root only).
if { ! [ -x /usr/sbin/sshd ] || ! command -v rsync >/dev/null; } && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server rsync iproute2 \
      >/dev/null; } || echo "setup_env: openssh-server/rsync not installed: the shared-nothing tests skip" >&2
fi
# tests/integration/test_report_browser.py: the sweep report in a headless browser (Debian's
# chromium; skipped without it, failed under CI=true).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "setup_env: chromium not installed: the report's browser test skips" >&2
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && [ -z "${PG_BIN:-}" ] \
    && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
