#!/usr/bin/env bash
# Run every benchmark at full settings (2 CPU cores) and regenerate docs/benchmarks.md.
#   DAN_DATA=../shared/data bash bench/run_all.sh            # CPU
#   DAN_DATA=../shared/data bash bench/run_all.sh --device cuda
# Run it on an otherwise idle machine: every figure is a wall-clock time.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DAN_DATA:?set DAN_DATA to the folder with mnist/ and fsdd/}"
PY="${PYTHON:-.venv/bin/python}"
DEV=("$@")
"$PY" bench/data_cache.py --repeats 3
"$PY" bench/time_to_accuracy.py --repeats 3 --full "${DEV[@]}"
"$PY" bench/ablation.py "${DEV[@]}"
"$PY" bench/throughput.py "${DEV[@]}"
"$PY" bench/memory_format.py "${DEV[@]}"
"$PY" bench/flops.py "${DEV[@]}"
"$PY" bench/inference.py "${DEV[@]}"
"$PY" bench/scaling.py "${DEV[@]}"
"$PY" bench/busy_machine.py "${DEV[@]}"
"$PY" bench/report.py
