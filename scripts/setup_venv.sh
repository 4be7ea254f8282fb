#!/usr/bin/env bash
# Creates ./.venv (if needed) and installs the pinned requirements; `dev` adds the test tools.
# Usage: source scripts/setup_venv.sh [dev]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
req=requirements.txt
[ "${1:-}" = "dev" ] && req=requirements-dev.txt
stamp=".venv/.installed-$(cat requirements.txt $req setup.py | sha1sum | cut -c1-12)-${1:-run}"
if [ ! -f "$stamp" ]; then
  # pip's and setuptools' messages go to a log, shown only when the install fails.
  log=.venv/install.log
  : > "$log"
  echo "setting up .venv ($req; log: $log)" >&2
  { .venv/bin/python -m pip install -q --upgrade pip \
      && .venv/bin/python -m pip install -q -r "$req" \
      && .venv/bin/python -m pip install -q --no-deps -e . ; } >>"$log" 2>&1 \
    && .venv/bin/python -c "import jax, flax, optax, orbax.checkpoint, tensorflow" >>"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; echo "setup_venv: the install failed (whole log: $log)" >&2; exit 1; }
  touch "$stamp"
fi
