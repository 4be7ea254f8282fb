#!/usr/bin/env bash
# The GPU figures in one run that fits 10 minutes on one GPU:
#   1. bf16 inference frames/s at 224 px, batch 64 (network only; scripts/bench_inference.py);
#   2. the 224 px train step's FLOPs, GFLOP/s and utilisation against the measured matmul rate,
#      in bf16 and in float32 (scripts/bench_train.py --mfu);
#   3. steps/s of configs/synthtalk.py's full step.
# Each part has its own time limit, so one that fails or hangs still leaves the others' figures.
#
#   bash scripts/gpu_check.sh            # python3 with a CUDA jax, or ./.venv
#
# A machine without network: packages its python lacks (e.g. ml-collections, a pure-Python wheel)
# are installed from wheels in ./.whl when that folder holds any
# (`pip download --no-deps ml-collections==1.1.0 -d .whl`).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import jax" >/dev/null 2>&1 && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/pcavs_site .whl/*.whl \
    && export PYTHONPATH=/tmp/pcavs_site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_PREALLOCATE=false
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
part() {  # part SECONDS SCRIPT ARGS...
  local limit=$1; shift
  echo "== $*"
  timeout "$limit" "$PY" "$@" || echo "(exit $? within ${limit} s: $*)"
}
part 120 scripts/bench_inference.py --batch 64 --dtype bfloat16 --repeats 5
part 180 scripts/bench_train.py --config configs/default.py --mfu --dtype bfloat16 --steps 10
part 180 scripts/bench_train.py --config configs/default.py --mfu --dtype float32 --steps 10
part 90 scripts/bench_train.py --config configs/synthtalk.py --steps 100
