#!/usr/bin/env bash
# Fetches the real face photos of the face tests (three of one person, one of another) from the
# sdist of face_recognition 1.3.0 (MIT; its tests/test_images/) into .cache/test_faces/ (ignored
# by git). Needs the network once; the tests skip with a reason where the photos are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/test_faces
[ -f "$dest/obama.jpg" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if .venv/bin/python -m pip download -q --no-deps --no-binary :all: face_recognition==1.3.0 \
    -d "$tmp" >/dev/null 2>&1; then
  tar -xzf "$tmp"/face_recognition-1.3.0.tar.gz -C "$tmp" face_recognition-1.3.0/tests/test_images
  mkdir -p "$dest"
  cp "$tmp"/face_recognition-1.3.0/tests/test_images/{obama,obama2,obama3,biden}.jpg "$dest"/
else
  echo "note: the face test photos could not be fetched; their tests will be skipped"
fi
