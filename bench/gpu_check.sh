#!/usr/bin/env bash
# bench/gpu_check.sh - kept for old instructions: the GPU check is bench/gpu_check.py.
#
#   bash bench/gpu_check.sh               # = python3 bench/gpu_check.py (on a machine with CUDA)
#   bash bench/gpu_check.sh --cpu-smoke   # no GPU: the same code with tiny sizes
#
# It needs nothing installed beyond what a lent GPU machine has (torch with CUDA, transformers,
# peft, tokenizers, scikit-learn, pandas); see `python3 bench/gpu_check.py --help`.
# PYTHON selects the interpreter (default: python3).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "${PYTHON:-python3}" "$REPO/bench/gpu_check.py" "$@"
