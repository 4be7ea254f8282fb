"""`pcavs-jax preprocess --videos DIR --out DIR [--shard i/n] [--workers W] [--resolution 224]`.

Flags only; the work is `data_pipeline.preprocess.preprocess_videos` (its module doc says what
the trees, the report and the resumption are).
"""
from __future__ import annotations

import argparse
import json
import sys

from data_pipeline import preprocess, video_clip, video_tree
from pcavs_jax.data.media import InputError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
  """Adds the `preprocess` subcommand."""
  p = subparsers.add_parser(
      "preprocess", help="real videos (VoxCeleb2/LRW-like trees) to aligned clip records",
      description=f"{preprocess.__doc__}\n{video_tree.__doc__}",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--videos", required=True, help="root of the video tree")
  p.add_argument("--out", required=True, help="record folder (resumable)")
  p.add_argument("--shard", default="0/1", help="i/n: this machine's share, 0 <= i < n")
  p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
  p.add_argument("--resolution", type=int, default=224, help="aligned frame side")
  p.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                 help="face detector: dlib's HOG (default, fast) or its CNN (slower, finds "
                      "harder faces); landmarks are dlib's 68 points either way")
  p.add_argument("--min-frames", type=int, default=video_clip.DEFAULT_MIN_FRAMES,
                 help="skip clips shorter than this (25 fps frames)")
  p.add_argument("--max-frames", type=int, default=None, help="cut longer clips")
  p.add_argument("--split", default=None, help="force every clip into this split")
  p.add_argument("--retry-failed", action="store_true",
                 help="process the videos an earlier run skipped again")
  p.add_argument("--frames-per-file", type=int, default=preprocess.DEFAULT_FRAMES_PER_FILE,
                 help="frames per record file (the unit of resumption)")
  p.add_argument("--jpeg-quality", type=int, default=95)
  p.set_defaults(func=run)
  return p


def run(args: argparse.Namespace) -> int:
  """Runs `pcavs-jax preprocess`; 0 when the run completes (skipped videos included)."""
  try:
    shard = video_tree.parse_shard(args.shard)
    if args.resolution < 16:
      raise ValueError(f"--resolution must be at least 16, got {args.resolution}")
    summary = preprocess.preprocess_videos(
        args.videos, args.out, shard=shard, workers=args.workers, resolution=args.resolution,
        detector=args.detector, min_frames=args.min_frames, max_frames=args.max_frames,
        split=args.split, retry_failed=args.retry_failed,
        frames_per_file=args.frames_per_file, jpeg_quality=args.jpeg_quality)
  except (InputError, ValueError) as e:
    print(f"pcavs-jax preprocess: error: {e}", file=sys.stderr)
    return 2
  print("preprocess: " + json.dumps(summary))
  return 0
