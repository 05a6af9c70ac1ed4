#!/usr/bin/env bash
# First look on the GPU machine: a few test programs natively and through `orion run`.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
which nvcc; nvidia-smi -L; python3 -c "import zmq, cuda.bindings; print(zmq.zmq_version())"
for p in device_props memory kernels streams_events; do
  echo "== native $p"; timeout 60 .gpu-build/programs/$p 2>&1 | tail -3
  echo "== orion $p"; ORION_LOG_DIR=$OUT/client timeout 120 python3 -m orion_client.cli run --log-dir $OUT/pool -- .gpu-build/programs/$p 2>&1 | tail -8
done
tar czf $OUT/logs.tgz -C $OUT pool client 2>/dev/null
tail -30 $OUT/pool/session/*.log
