"""SynthTalk: a procedural talking-face benchmark with exact ground truth (DESIGN.md §5).

Modules:
  identity     per-speaker face and voice parameters, the shared landmark layout
  speech       phoneme sequences, the formant synthesiser, the mouth the phonemes imply
  render       the ray-cast renderer: any (identity, pose, mouth) to an aligned frame
  generate     head motion, splits and the assembly of `Clip` records
  analyzer     reads pose, mouth and identity colours back from a frame (classical CV)
  crossdriven  the cross-driven evaluation set (identity A, pose B, audio C) and its truth
  scoring      SSIM, PSNR, mouth, pose, identity errors, audio-to-mouth lag; the baselines
  cli          the `pcavs-jax synthtalk` subcommand (`register`, `run`)
"""
from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
  """Adds the `synthtalk` subcommand to an argparse subparsers object (see `cli`)."""
  from data_pipeline.synthtalk import cli
  return cli.register(subparsers)


def run(args: argparse.Namespace) -> int:
  """Runs the `synthtalk` subcommand (see `cli.run`)."""
  from data_pipeline.synthtalk import cli
  return cli.run(args)
