#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install fairseq_meta into it.
#   source scripts/setup_env.sh      # leaves the venv activated in your shell
#   bash scripts/setup_env.sh        # just installs
# VENV=/path overrides the location (default: .venv in the repository).
# torch is pinned to the CPU wheel that ships on the development machines
# (an unpinned torch would pull a multi-GB CUDA build); on a GPU machine install
# your CUDA torch first and set FAIRSEQ_META_TORCH= (empty) to keep it.
set -euo pipefail
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$_repo/.venv}"
TORCH_SPEC="${FAIRSEQ_META_TORCH-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup_env] creating virtual environment in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
_stamp="$VENV/.fairseq_meta-installed"
_want="$(cat "$_repo/setup.py" | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
  if [ -n "$TORCH_SPEC" ]; then
    echo "[setup_env] installing $TORCH_SPEC"
    python -m pip install -q "$TORCH_SPEC"
  fi
  echo "[setup_env] installing fairseq_meta (editable) and its test extras"
  python -m pip install -q -e "$_repo[test]"
  # ve-fairseq declares torchaudio, but the newest torchaudio cannot load with
  # this torch (OSError from its C++ library), and transformers imports it
  # whenever it is installed. fairseq uses it only in audio examples.
  if ! python -c "import torchaudio" >/dev/null 2>&1; then
    echo "[setup_env] removing torchaudio (it does not load with this torch)"
    python -m pip uninstall -q -y torchaudio
  fi
  echo "$_want" > "$_stamp"
fi
python -c "import logging; logging.basicConfig(level=logging.WARNING)
import torch, fairseq, fairseq_meta; print('[setup_env] torch', torch.__version__, '| fairseq', fairseq.__version__)"
