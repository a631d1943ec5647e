#!/usr/bin/env bash
# The test command: creates the environment when missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c "import experiments, service, torch, mlflow" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[dev]'
fi
exec .venv/bin/pytest -q "$@"
