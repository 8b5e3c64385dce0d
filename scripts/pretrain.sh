#!/usr/bin/env bash
# The main job: meta-pre-train a small BERT-style encoder (k=1 meta-train step,
# first-order) on CPU, end to end.
#
#   bash scripts/pretrain.sh                  # default corpus: Python stdlib docstrings
#   bash scripts/pretrain.sh TEXT_PATH ...    # your text files / directories of *.txt
#
# Steps: set up .venv (scripts/setup_env.sh); check every input and training
# flag; build the corpus into $RUN_DIR/data (scripts/stdlib_corpus.py ->
# scripts/prepare_corpus.py) unless the same content was built before; run
# fairseq-train with the fairseq_meta plugin (full log: $RUN_DIR/train.log),
# showing progress with an ETA; end with the valid loss, the checkpoints and the
# next commands. The work is done by python -m fairseq_meta.run.pretrain.
#
# Environment overrides:
#   RUN_DIR     output directory (default: <repo>/runs/pretrain-demo)
#   MAX_UPDATE  number of updates (default: 500, about 3 minutes on 2 idle CPU cores);
#               it sets the learning-rate schedule too (warm-up: a tenth, at most 50)
#   EXTRA_ARGS  extra fairseq-train arguments, appended last (checked before any work)
#   WORKERS     processes for data preparation (default: number of CPUs)
#   OMP_NUM_THREADS  training threads (default: the CPUs not busy now; see README)
#
# Re-running reuses $RUN_DIR/data when the inputs' content is unchanged (sha256
# in $RUN_DIR/data.inputs) and fairseq resumes from
# $RUN_DIR/checkpoints/checkpoint_last.pt (raise MAX_UPDATE to train further).
set -euo pipefail

_prog="pretrain.sh"
die() { echo "$_prog: error: $*" >&2; exit 2; }

case "${1:-}" in
  -h|--help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0 ;;
esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${RUN_DIR:-$REPO/runs/pretrain-demo}"
MAX_UPDATE="${MAX_UPDATE:-500}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
WORKERS="${WORKERS:-$(nproc 2>/dev/null || echo 1)}"

# What needs no Python is checked before the environment is set up.
[[ "$MAX_UPDATE" =~ ^[1-9][0-9]*$ ]] || die "MAX_UPDATE must be a positive integer (got '$MAX_UPDATE')"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "WORKERS must be a positive integer (got '$WORKERS')"
for p in "$@"; do
  case "$p" in -*) die "unknown option '$p' (see --help)" ;; esac
  [ -e "$p" ] || die "input not found: $p"
done

# shellcheck disable=SC1091
source "$REPO/scripts/setup_env.sh"
# The flags, the schedule and the data are checked there before anything is built.
# Logging is set to warnings before fairseq is imported: one of its tasks announces
# an optional tensorboardX at import time although tensorboard logging works.
exec python -c 'import logging, runpy; logging.basicConfig(level=logging.WARNING)
runpy.run_module("fairseq_meta.run.pretrain", run_name="__main__", alter_sys=True)' \
  --run-dir "$RUN_DIR" --max-update "$MAX_UPDATE" --workers "$WORKERS" \
  --extra-args "$EXTRA_ARGS" -- "$@"
