#!/usr/bin/env bash
# The main job on the embedded default: installs, builds a small SynthTalk set, trains
# configs/synthtalk.py for a few minutes, generates cross-driven videos for held-out identities
# and prints the evaluation table. DEMO_TRAIN_MINUTES sets the training time (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pcavs_jax.demo "$@"
