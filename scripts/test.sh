#!/usr/bin/env bash
# The test command: installs the pinned dev environment into ./.venv, then runs the default suite
# (tests marked `slow` are left out; `bash scripts/test.sh -m slow` runs only those).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh dev
export TF_CPP_MIN_LOG_LEVEL=2
args=("$@")
default=0
[ ${#args[@]} -eq 0 ] && { args=(-m "not slow"); default=1; }
set +e
.venv/bin/python -m pytest "${args[@]}"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  # pytest exits 5 when nothing was selected: fine for a narrowed run, a fault for the default.
  echo "pytest selected no tests"
  [ $default -eq 1 ] && exit 1
  exit 0
fi
exit $rc
