#!/usr/bin/env bash
# The test command: installs the pinned dev environment into ./.venv, then runs the default suite
# (tests marked `slow` are left out; `bash scripts/test.sh -m slow` runs only those).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh dev
# Real face photos for the face tests (.cache/test_faces, ignored by git).
bash scripts/fetch_test_faces.sh
# espeak-ng (a Debian package) speaks the sentence of the real-speech generation test.
if ! command -v espeak-ng >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get install -y -q espeak-ng || { apt-get update -q && apt-get install -y -q espeak-ng; }; } \
    >/dev/null 2>&1 || echo "note: espeak-ng could not be installed; its test will be skipped"
fi
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
