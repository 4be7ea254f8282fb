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
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -r "$req" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import jax, flax, optax, orbax.checkpoint, tensorflow" >/dev/null 2>&1 \
    || { echo "setup_venv: the install failed (see pip's output above)" >&2; exit 1; }
  touch "$stamp"
fi
