"""`pcavs-jax evaluate`: scores generated videos against their ground truth, or on SynthTalk.

  pcavs-jax evaluate --generated GEN --truth TRUTH [--reference IMG] [--pose-source POSE]
      [--detector hog|cnn] [--report R.json]
  pcavs-jax evaluate --generated DIR --synthtalk EVAL_SET.npz [--report R.json]

The work is in `pcavs_jax.evaluate.videos.evaluate_paths` (paired measures, described below) and
`pcavs_jax.evaluate.scoring.evaluate_synthtalk` (`--synthtalk`: SynthTalk's exact mouth, pose and
identity errors against the rendered truth, audio-to-mouth lag and sync, beside the baselines'
scores stored with the set, and the CPBD of the generated frames).
"""
from __future__ import annotations

import argparse
import sys

from pcavs_jax.data import files
from pcavs_jax.data.media import InputError
from pcavs_jax.evaluate import report, scoring, videos


def register(subparsers) -> argparse.ArgumentParser:
  """Adds the `evaluate` subcommand."""
  p = subparsers.add_parser(
      "evaluate", help="score generated videos: SSIM, PSNR, CPBD, LMD, CSIM, pose error; SynthTalk "
           "exact measures",
      description=f"{__doc__}\n{videos.__doc__}",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--generated", required=True, help="generated video, frames folder, or folder")
  truth = p.add_mutually_exclusive_group(required=True)
  truth.add_argument("--truth", help="ground truth: video, frames folder, folder, or records")
  truth.add_argument("--synthtalk", help="SynthTalk cross-driven eval_set.npz")
  p.add_argument("--split", default="test", help="record split when --truth is a record folder")
  p.add_argument("--reference", help="reference photo for CSIM, or a folder of them named like "
                                     "the videos (default: CSIM against the truth frames)")
  p.add_argument("--pose-source", help="pose source for the pose error: video, frames or a "
                                       "folder of them named like the videos (default: truth)")
  p.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                 help="face detector for the face measures (dlib HOG or CNN)")
  p.add_argument("--max-frames", type=int, default=None, help="compare at most this many frames")
  p.add_argument("--cpbd-every", type=int, default=1, help="CPBD on every n-th frame")
  p.add_argument("--report", help="JSON report path (default: beside the generated videos)")
  p.set_defaults(func=run)
  return p


def run(args: argparse.Namespace) -> int:
  """The `evaluate` subcommand; returns the exit code (2 on bad input)."""
  try:
    if args.synthtalk:
      result = scoring.evaluate_synthtalk(args.generated, args.synthtalk,
                                          cpbd_every=args.cpbd_every)
    else:
      result = videos.evaluate_paths(args.generated, args.truth, split=args.split,
                                     reference=args.reference, pose_source=args.pose_source,
                                     detector=args.detector, max_frames=args.max_frames,
                                     cpbd_every=args.cpbd_every)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  path = files.write_json(args.report or videos.default_report_path(args.generated), result)
  print(report.format_table(result))
  print(f"evaluate: report written to {path}")
  return 0
