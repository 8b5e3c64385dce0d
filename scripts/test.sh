#!/usr/bin/env bash
# The test command (README): set up the environment, then run the whole suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
exec python -m pytest tests -ra "$@"
