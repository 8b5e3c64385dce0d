#!/usr/bin/env bash
# The test command (README): set up the environment, then run the whole suite.
#   bash scripts/test.sh [pytest args...]
# Tests run in two processes (pytest-xdist, one per core); most of them start
# fairseq-train subprocesses, so the suite is bound by process start-up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
exec python -m pytest tests -ra -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
