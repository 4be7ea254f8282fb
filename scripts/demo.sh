#!/usr/bin/env bash
# The main job on the embedded default: installs, builds a small SynthTalk set, trains
# configs/synthtalk.py for a few minutes (short identity and sync stages, then full) under a
# progress bar, generates cross-driven videos for seen (held-out clips) and unseen identities and
# prints the seen / unseen tables and the mechanism measures. DEMO_TRAIN_MINUTES sets the training
# time (default 8); --verbose shows the libraries' logs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
exec .venv/bin/pcavs-jax demo "$@"
