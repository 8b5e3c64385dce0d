#!/usr/bin/env bash
# The main job: meta-pre-train a small BERT-style encoder (k=1 meta-train step,
# first-order) on CPU, end to end.
#
#   bash scripts/pretrain.sh                  # default corpus: Python stdlib docstrings
#   bash scripts/pretrain.sh TEXT_PATH ...    # your text files / directories of *.txt
#
# Steps: set up .venv (scripts/setup_env.sh), build the corpus into
# $RUN_DIR/data (scripts/stdlib_corpus.py -> scripts/prepare_corpus.py), run
# fairseq-train with the fairseq_meta plugin, print where the results are.
#
# Environment overrides:
#   RUN_DIR     output directory (default: <repo>/runs/pretrain-demo)
#   MAX_UPDATE  number of updates (default: 500, about 3 minutes on 2 idle CPU cores)
#   EXTRA_ARGS  extra fairseq-train arguments, appended last (split on spaces)
#   WORKERS     processes for data preparation (default: number of CPUs)
#
# Re-running with the same inputs reuses $RUN_DIR/data and fairseq resumes from
# $RUN_DIR/checkpoints/checkpoint_last.pt (raise MAX_UPDATE to train further).
set -euo pipefail

_prog="pretrain.sh"
die() { echo "$_prog: error: $*" >&2; exit 1; }

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

# Check everything before creating anything.
[[ "$MAX_UPDATE" =~ ^[1-9][0-9]*$ ]] || die "MAX_UPDATE must be a positive integer (got '$MAX_UPDATE')"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "WORKERS must be a positive integer (got '$WORKERS')"
INPUTS=()
for p in "$@"; do
  case "$p" in -*) die "unknown option '$p' (see --help)" ;; esac
  [ -e "$p" ] || die "input not found: $p"
  INPUTS+=("$(cd "$(dirname "$p")" && pwd)/$(basename "$p")")
done
read -r -a EXTRA <<< "$EXTRA_ARGS"
case "$RUN_DIR" in /*) ;; *) RUN_DIR="$PWD/$RUN_DIR" ;; esac
DATA="$RUN_DIR/data"
STAMP="$RUN_DIR/data.inputs"  # what $DATA was built from
if [ ${#INPUTS[@]} -eq 0 ]; then
  want="default corpus: Python standard library docstrings"
else
  want="$(printf '%s\n' "${INPUTS[@]}")"
fi
reuse_data=false
if [ -f "$DATA/dict.txt" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  reuse_data=true
elif [ -e "$RUN_DIR/checkpoints/checkpoint_last.pt" ]; then
  die "$RUN_DIR holds checkpoints trained on other data; set RUN_DIR to a new directory or delete $RUN_DIR"
fi

_t_start=$SECONDS
_step_start=$SECONDS
step_done() { echo "[pretrain] $1 took $((SECONDS - _step_start))s"; _step_start=$SECONDS; }

# 1. Environment.
echo "[pretrain] setting up the environment (scripts/setup_env.sh)"
# shellcheck disable=SC1091
source "$REPO/scripts/setup_env.sh"
step_done "environment setup"

# 2. Corpus -> binarized data.
if $reuse_data; then
  echo "[pretrain] reusing $DATA (built from the same inputs; delete it to rebuild)"
else
  mkdir -p "$RUN_DIR"
  if [ ${#INPUTS[@]} -eq 0 ]; then
    python "$REPO/scripts/stdlib_corpus.py" --out "$RUN_DIR/corpus/stdlib-docstrings.txt"
    INPUTS=("$RUN_DIR/corpus/stdlib-docstrings.txt")
    step_done "stdlib corpus"
  fi
  rm -f "$STAMP"
  python "$REPO/scripts/prepare_corpus.py" --destdir "$DATA" --force \
    --workers "$WORKERS" "${INPUTS[@]}"
  echo "$want" > "$STAMP"
fi
step_done "data preparation"

# 3. Meta-pre-training (k=1 inner step, first-order).
echo "[pretrain] fairseq-train: $MAX_UPDATE updates on $DATA"
fairseq-train "$DATA" --user-dir "$REPO/fairseq_meta" \
  --task meta_masked_lm --criterion meta_masked_lm --optimizer meta_adam \
  --meta-train-steps 1 --inner-lr 1e-3 --meta-order first \
  --arch roberta_base --encoder-layers 2 --encoder-embed-dim 128 \
  --encoder-ffn-embed-dim 512 --encoder-attention-heads 2 \
  --tokens-per-sample 128 --batch-size 16 \
  --lr 5e-4 --lr-scheduler polynomial_decay --warmup-updates 50 \
  --total-num-update "$MAX_UPDATE" --max-update "$MAX_UPDATE" \
  --cpu --save-dir "$RUN_DIR/checkpoints" --tensorboard-logdir "$RUN_DIR/tensorboard" \
  --log-format simple --log-interval 10 \
  --validate-interval-updates 100 --save-interval-updates 100 --keep-interval-updates 2 \
  --seed 1 ${EXTRA[@]+"${EXTRA[@]}"}
step_done "training"

echo "[pretrain] done in $((SECONDS - _t_start))s"
echo "[pretrain] data:        $DATA (sentencepiece model: $DATA/spm.model)"
echo "[pretrain] checkpoints: $RUN_DIR/checkpoints (latest: $RUN_DIR/checkpoints/checkpoint_last.pt)"
echo "[pretrain] tensorboard: tensorboard --logdir $RUN_DIR/tensorboard"
