r"""`pcavs-jax synthtalk`: builds the SynthTalk train and test splits and the cross-driven sets.

  pcavs-jax synthtalk --out /data/synthtalk --identities 40 --clips-per-identity 4 \
      --resolution 64 --seed 0

Flags only; the work is `data_pipeline.synthtalk.write.write_synthtalk`.
"""
from __future__ import annotations

import argparse

from data_pipeline.synthtalk import write

_DEFAULTS = write.SynthTalkSettings()


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
  """Adds the `synthtalk` subcommand."""
  p = subparsers.add_parser(
      "synthtalk", help="build the SynthTalk benchmark (procedural talking faces)",
      description=f"{__doc__}\nwrites\n{write.__doc__.split(chr(10), 2)[2]}",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  d = _DEFAULTS
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--identities", type=int, default=d.identities, help="number of identities")
  p.add_argument("--clips-per-identity", type=int, default=d.clips_per_identity)
  p.add_argument("--resolution", type=int, default=d.resolution, help="frame size in pixels")
  p.add_argument("--seed", type=int, default=d.seed)
  p.add_argument("--frames", type=int, default=d.frames, help="frames per clip (25 fps)")
  p.add_argument("--test-fraction", type=float, default=d.test_fraction,
                 help="fraction of identities held out as the test split")
  p.add_argument("--triples", type=int, default=d.triples,
                 help="cross-driven triples (default: test identities x min(clips, 2))")
  p.add_argument("--heldout-clips", type=int, default=d.heldout_clips,
                 help="extra clips per training identity that training never reads (the seen "
                      "set's clips; 0: no seen set)")
  p.add_argument("--seen-triples", type=int, default=d.seen_triples,
                 help="seen-set triples (default: as many as unseen, else min(train ids, 24)); "
                      "held-out clips are drawn for that many training identities")
  p.add_argument("--self-driven", action="store_true",
                 help="also write the self-driven set of every training clip (memorisation)")
  p.add_argument("--pose-twins", action="store_true",
                 help="draw each training clip's pose and mouth on another training identity too "
                      "(a pose source without the clip's identity: config data.pose_twins)")
  p.add_argument("--workers", type=int, default=d.workers,
                 help="processes to render clips and score baselines with")
  p.add_argument("--num-shards", type=int, default=d.num_shards,
                 help="TFRecord shards per split")
  p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
  p.add_argument("--no-baselines", action="store_true", help="skip scoring the baselines")
  p.set_defaults(func=run)
  return p


def run(args: argparse.Namespace) -> int:
  """Builds the splits, the evaluation sets and their baseline scores; returns the exit code."""
  settings = write.SynthTalkSettings(
      identities=args.identities, clips_per_identity=args.clips_per_identity,
      resolution=args.resolution, seed=args.seed, frames=args.frames,
      test_fraction=args.test_fraction, triples=args.triples, heldout_clips=args.heldout_clips,
      seen_triples=args.seen_triples, self_driven=args.self_driven, pose_twins=args.pose_twins,
      workers=args.workers,
      num_shards=args.num_shards, jpeg_quality=args.jpeg_quality,
      baselines=not args.no_baselines)
  write.write_synthtalk(args.out, settings, log=lambda line: print(line, flush=True))
  return 0

