"""`pcavs-jax synthtalk`: builds the SynthTalk train and test splits and the cross-driven set.

  pcavs-jax synthtalk --out /data/synthtalk --identities 40 --clips-per-identity 4 \
      --resolution 64 --seed 0

writes
  OUT/manifest.json, OUT/train/*.tfrecord, OUT/test/*.tfrecord   the clips (pcavs_jax.data.records)
  OUT/cross_driven/eval_set.npz (+ .json), baselines.json        unseen: test identities' triples
  OUT/cross_driven/seen_set.npz (+ .json), seen_baselines.json   seen: triples of held-out clips
                                                                 of training identities
  OUT/cross_driven/self_set.npz, self_baselines.json             with --self-driven: the training
                                                                 clips driven by themselves
  OUT/synthtalk.json                                             the settings and the split
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
  """Adds the `synthtalk` subcommand to an argparse subparsers object."""
  p = subparsers.add_parser(
      "synthtalk", help="build the SynthTalk benchmark (procedural talking faces)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--identities", type=int, default=40, help="number of identities")
  p.add_argument("--clips-per-identity", type=int, default=4)
  p.add_argument("--resolution", type=int, default=64, help="frame size in pixels")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--frames", type=int, default=50, help="frames per clip (25 fps)")
  p.add_argument("--test-fraction", type=float, default=0.2,
                 help="fraction of identities held out as the test split")
  p.add_argument("--triples", type=int, default=None,
                 help="cross-driven triples (default: test identities x min(clips, 2))")
  p.add_argument("--heldout-clips", type=int, default=1,
                 help="extra clips per training identity that training never reads (the seen "
                      "set's clips; 0: no seen set)")
  p.add_argument("--seen-triples", type=int, default=None,
                 help="seen-set triples (default: as many as unseen, else min(train ids, 24)); "
                      "held-out clips are drawn for that many training identities")
  p.add_argument("--self-driven", action="store_true",
                 help="also write the self-driven set of every training clip (memorisation)")
  p.add_argument("--workers", type=int, default=1, help="rendering processes")
  p.add_argument("--num-shards", type=int, default=None, help="TFRecord shards per split")
  p.add_argument("--jpeg-quality", type=int, default=95)
  p.add_argument("--no-baselines", action="store_true", help="skip scoring the baselines")
  p.set_defaults(func=run)
  return p


def _check(args: argparse.Namespace) -> None:
  if args.identities < 1 or args.clips_per_identity < 1 or args.frames < 1:
    raise ValueError("--identities, --clips-per-identity and --frames must be >= 1")
  if args.resolution < 32:
    raise ValueError("--resolution must be >= 32 pixels")
  if not 0.0 <= args.test_fraction < 1.0:
    raise ValueError("--test-fraction must be in [0, 1)")


def run(args: argparse.Namespace) -> int:
  """Builds the splits, the evaluation sets and their baseline scores; returns the exit code."""
  from pcavs_jax.data import records
  from data_pipeline.synthtalk import generate
  from pcavs_jax.data.synthtalk import eval_sets

  _check(args)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  split = generate.split_identities(args.identities, args.test_fraction)
  gen = lambda ids: generate.generate_clips(args.seed, ids, args.clips_per_identity,
                                            args.frames, args.resolution, args.workers)
  timings = {}
  kept = {"train": [], "test": []}

  def keep(clips, into):
    for clip in clips:
      into.append(clip)
      yield clip

  for name, ids in (("train", split.train), ("test", split.test)):
    if not ids:
      continue
    start = time.time()
    clips = gen(ids)
    if name == "test" or args.self_driven:
      clips = keep(clips, kept[name])
    entry = records.write_clips(clips, out, name, num_shards=args.num_shards,
                                jpeg_quality=args.jpeg_quality)
    took = time.time() - start
    timings[name] = took
    print(f"synthtalk: {name}: {entry['clips']} clips of {len(ids)} identities in {took:.1f} s "
          f"({entry['clips'] / max(took, 1e-9):.2f} clips/s)", flush=True)

  summary = {"seed": args.seed, "identities": args.identities,
             "clips_per_identity": args.clips_per_identity, "frames": args.frames,
             "resolution": args.resolution, "test_fraction": args.test_fraction,
             "heldout_clips": args.heldout_clips,
             "train_identities": [generate.identity_name(i) for i in split.train],
             "test_identities": [generate.identity_name(i) for i in split.test],
             "seconds": timings, "triples": {}}
  sets = {}
  if kept["test"]:
    sets["unseen"] = lambda: eval_sets.build_eval_set(kept["test"], args.triples)
  else:
    print("synthtalk: no test identities, so no unseen cross-driven set", flush=True)
  seen_ids = _seen_identities(args, split)
  if seen_ids and args.heldout_clips > 0:
    heldout = lambda: list(generate.generate_clips(
        args.seed, seen_ids, args.heldout_clips, args.frames, args.resolution, args.workers,
        first_clip=args.clips_per_identity))
    sets["seen"] = lambda: eval_sets.build_eval_set(heldout(), len(seen_ids) if
                                                      args.seen_triples is None else
                                                      args.seen_triples, seen=True)
  if args.self_driven and kept["train"]:
    sets["self"] = lambda: eval_sets.build_self_driven_set(kept["train"])
  for name, build in sets.items():
    start = time.time()
    eval_set = build()
    set_file, _ = eval_sets.SET_FILES[name]
    path = eval_sets.save_eval_set(eval_set, out / "cross_driven" / set_file)
    summary["triples"][name] = len(eval_set)
    print(f"synthtalk: {name} set: {len(eval_set)} triples ({time.time() - start:.1f} s)",
          flush=True)
    if not args.no_baselines:
      _write_baselines(eval_set, path, name)
  (out / "synthtalk.json").write_text(json.dumps(summary, indent=1))
  return 0


def _seen_identities(args: argparse.Namespace, split) -> tuple[int, ...]:
  """The training identities whose held-out clips make the seen set (the first n)."""
  if args.seen_triples is not None:
    n = args.seen_triples
  elif split.test:
    n = args.triples or len(split.test) * min(args.clips_per_identity, 2)
  else:
    n = 24
  return split.train[:max(min(n, len(split.train)), 0)]


def _write_baselines(eval_set, set_path: Path, name: str) -> None:
  """Scores the baselines of one set beside it, and prints them."""
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.evaluate import scoring
  scores = scoring.baseline_scores(eval_set)
  eval_sets.baselines_path(set_path).write_text(json.dumps(scores, indent=1))
  keys = ("ssim", "psnr", "mouth_err", "pose_err", "identity_err", "sync", "abs_lag")
  print(f"synthtalk: {name} baselines " + " ".join(f"{k:>12s}" for k in keys))
  for baseline, s in scores.items():
    print(f"  {baseline:16s}" + " ".join(f"{s[k]:12.3f}" for k in keys), flush=True)


def main(argv: list[str] | None = None) -> int:
  """Stand-alone entry point: `python -m data_pipeline.synthtalk.cli --out ...`."""
  parser = argparse.ArgumentParser(prog="synthtalk")
  sub = parser.add_subparsers(dest="command", required=True)
  register(sub)
  args = parser.parse_args(["synthtalk"] + (sys.argv[1:] if argv is None else list(argv)))
  return args.func(args)


if __name__ == "__main__":
  raise SystemExit(main())
