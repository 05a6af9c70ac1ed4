#!/usr/bin/env bash
# Everything the device checks after a change to the shim, the wire or the server, in one
# run: the GPU suite (scripts/gpu-suite.sh, compute shares included) and the benchmark
# suite; results under $OUT. Build here first (scripts/setup), then on the device:
#   bash scripts/gpu-check.sh COMMIT     (carry .whl, orion_client/lib, orion_server/lib)
# COMMIT as written here (e.g. the output of `git rev-parse --short HEAD` on this side):
# the device's copy of the tree has no git history of its own, or a stale one.
set -u
cd "$(dirname "$0")/.."
COMMIT=${1:?usage: gpu-check.sh COMMIT (the commit of this tree, from the machine that built it)}
OUT=${OUT:-$PWD/gpu-results}; mkdir -p "$OUT"
bash scripts/gpu-suite.sh
PYTHONPATH=/tmp/site:$PWD python3 benchmarks/run_suite.py --out "$OUT" \
  --shim-dir orion_client/lib --deadline-s 360 --commit "$COMMIT" 2>&1 | tail -45
