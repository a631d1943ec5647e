#!/usr/bin/env bash
# The whole of HW1 at the course defaults on one CUDA GPU: each experiment timed beside its
# compute bound (its FLOP count at the fp32 matmul rate measured on that GPU), the table of
# bench/bench_suite.py --defaults. Installs the project alone (`pip install -e .`, its pinned
# dependencies, no dev tools) into .venv when it is missing; datasets come from
# $PHENOLAB_DATA_DIR (default ./data, downloaded when online).
#
# Built to end within 10 minutes once installed: no experiment starts after BUDGET seconds
# (default 330), and each of its two runs (timed, then counted) is stopped after LIMIT seconds
# (default 100), so the table is printed by about BUDGET + 2·LIMIT + start-up seconds; an
# experiment that takes longer is shown as "> LIMIT".
#
#     bash bench/gpu.sh            # or: BUDGET=3000 LIMIT=600 bash bench/gpu.sh for all of it
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi -L || { echo "bench/gpu.sh: no NVIDIA GPU visible (nvidia-smi failed)" >&2; exit 1; }
if ! .venv/bin/python -c "import experiments, service, torch, mlflow" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet -e .
fi
.venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'torch sees no CUDA device')"
exec .venv/bin/python bench/bench_suite.py --modes none --defaults --device cuda \
  --limit "${LIMIT:-100}" --budget "${BUDGET:-330}"
