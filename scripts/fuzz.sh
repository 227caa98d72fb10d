#!/usr/bin/env bash
# Run the fuzz suite alone: per test, how many generated inputs were read or refused, and its wall time.
# The suite is deterministic (derandomize=True), so these numbers repeat run to run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
start=$(date +%s)
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -q -p no:cacheprovider tests/fuzz \
  --hypothesis-show-statistics -W ignore::UserWarning "$@" | grep -E "^tests/fuzz|%, (read|refused)|passed|failed"
echo "fuzz suite wall time: $(( $(date +%s) - start )) s"
