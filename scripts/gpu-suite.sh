#!/usr/bin/env bash
# The GPU suite on a machine with an NVIDIA GPU, as the device runs it: installs the
# carried wheels if any, then `pytest -m gpu [ARGS]`; results land in $OUT (or ./gpu-results).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
# a GPU host without the native build's headers runs the shim built elsewhere
[ -f /usr/include/zmq.h ] || export ORION_SHIM_DIR=$PWD/orion_client/lib
nvidia-smi -L
python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider --junitxml="$OUT/gpu-junit.xml" \
  -o junit_family=xunit1 "$@" 2>&1 | tee "$OUT/gpu-pytest.txt" | tail -40
