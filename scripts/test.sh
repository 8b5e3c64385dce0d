#!/usr/bin/env bash
# The test command (README): set up the environment, then run the whole suite.
#   bash scripts/test.sh [pytest args...]
# Tests run in two processes (pytest-xdist, one per core); most of them start
# fairseq-train subprocesses, so the suite is bound by process start-up. The whole
# suite takes ~25 minutes on 2 cores (README, Tests); while developing, skip the end-to-end
# pipelines: bash scripts/test.sh -m "not slow" (CI runs everything).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
exec python -m pytest tests -ra --durations=15 -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
