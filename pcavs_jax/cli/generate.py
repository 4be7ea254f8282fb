"""Talking-face videos from a reference photo, a speech track and a pose source.

  pcavs-jax generate --checkpoint CKPT --reference IMG_OR_DIR --audio WAV_OR_VIDEO \\
      [--pose VIDEO_OR_IMAGE] --out OUT.mp4 [--panel] [--frames-dir DIR] [--batch-size 8]
  pcavs-jax generate --checkpoint CKPT --manifest jobs.csv|jobs.jsonl|demo.csv --out DIR
  pcavs-jax generate --checkpoint CKPT --synthtalk EVAL_SET.npz --out DIR
  pcavs-jax generate --checkpoint CKPT --records DIR [--split test] --out DIR

Inputs are prepared like training data: the largest face of each reference image is detected
(dlib, 68 landmarks) and aligned; a pose video gets the official clip alignment; audio becomes
16 kHz mono and one mel window per 1/25 s, and the video is as long as the audio. A pose video
shorter than the audio is played forwards and backwards as the official demo does
(`--strict-pose-length` refuses it); a single pose image holds that pose; without a pose source
the reference's own pose is held.

Outputs are written atomically, so a re-run of a manifest skips finished outputs; a job that
fails is recorded with its reason in results.jsonl while the others complete. Across hosts,
job i runs on host i mod the process count.

Manifests (paths relative to the manifest's folder, else to the working directory):
- CSV with a header: `reference,audio[,pose][,mouth_source][,name]` (`output` is read as `name`);
- JSON lines: one object per job with the same keys;
- the official 8-field `demo.csv` rows (space separated, no header): reference folder, number of
  references, pose frames folder (not a folder: the reference's own pose), number of pose frames,
  audio, mouth-source frames folder, number of mouth frames, mel .npy (or `dummy`).

`--official-crop` repeats the official loader's face crop; it is on by default when the
checkpoint is a folder of official `.pth` files.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> argparse.ArgumentParser:
  """Adds the `generate` subcommand."""
  p = subparsers.add_parser(
      "generate", help="talking-face videos from a photo, speech and a pose source",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True,
                 help="exported checkpoint folder or folder of official .pth files")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--reference", help="reference image, folder of images, or video")
  src.add_argument("--manifest", help="jobs file: CSV, JSON lines, or official demo.csv")
  src.add_argument("--synthtalk", help="SynthTalk cross-driven eval_set.npz: one video per triple")
  src.add_argument("--records", help="clip record folder: self-driven reconstructions")
  p.add_argument("--audio", help="driving audio: sound file or video (single mode)")
  p.add_argument("--pose", help="pose source: video, image or frames folder (single mode)")
  p.add_argument("--mouth-source", help="panel's last column (single mode)")
  p.add_argument("--out", required=True, help="OUT.mp4 (single mode) or output folder")
  p.add_argument("--split", default="test", help="record split (--records)")
  p.add_argument("--max-clips", type=int, default=None, help="at most this many clips (--records)")
  p.add_argument("--panel", action="store_true",
                 help="also write <name>_panel.mp4: reference | generated | pose | mouth source")
  p.add_argument("--frames-dir", help="also write the frames as PNGs (per job: DIR/<name>/)")
  p.add_argument("--batch-size", type=int, default=8, help="frames per device per network call")
  p.add_argument("--aligned", action="store_true",
                 help="inputs are aligned face crops already: no face detection")
  crop = p.add_mutually_exclusive_group()
  crop.add_argument("--official-crop", dest="official", action="store_true", default=None,
                    help="apply the official loader's face crop (default: only for official "
                         ".pth checkpoints)")
  crop.add_argument("--no-official-crop", dest="official", action="store_false")
  p.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                 help="face detector: dlib's HOG (default, fast) or its CNN (slower, finds "
                      "harder faces); faces get dlib's 68 landmarks and the official alignment")
  p.add_argument("--max-frames", type=int, default=None, help="cut the audio to this many frames")
  p.add_argument("--strict-pose-length", action="store_true",
                 help="refuse a pose video shorter than the audio instead of looping it")
  p.add_argument("--overwrite", action="store_true", help="redo jobs whose outputs exist")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run)
  return p


def _single(args: argparse.Namespace) -> int:
  from pcavs_jax.infer import api
  rec = api.generate(args.checkpoint, args.reference, args.audio, args.out, args.pose,
                     mouth_source=args.mouth_source, panel=args.panel,
                     frames_dir=args.frames_dir, batch_size=args.batch_size,
                     aligned=args.aligned, official=args.official, detector=args.detector,
                     max_frames=args.max_frames, strict_pose_length=args.strict_pose_length,
                     progress=not args.no_progress)
  for note in rec.get("notes", []):
    print(f"note: {note}")
  print(f"generate: {rec['frames']} frames ({rec['duration_s']:.2f} s) -> {rec['output']}"
        + (f", panel {rec['panel']}" if rec.get("panel") else ""))
  return 0


def _batch(args: argparse.Namespace) -> int:
  from pcavs_jax.infer import api
  settings = dict(panel=args.panel, frames_dir=args.frames_dir, batch_size=args.batch_size,
                  overwrite=args.overwrite, progress=not args.no_progress)
  if args.manifest:
    summary = api.generate_batch(
        args.checkpoint, args.manifest, args.out, aligned=args.aligned, official=args.official,
        detector=args.detector, max_frames=args.max_frames,
        strict_pose_length=args.strict_pose_length, **settings)
  elif args.synthtalk:
    summary = api.generate_synthtalk(args.checkpoint, args.synthtalk, args.out, **settings)
  else:
    summary = api.generate_records(args.checkpoint, args.records, args.out, split=args.split,
                                   max_clips=args.max_clips, **settings)
  counts = summary["counts"]
  print(f"generate: {summary['frames']} frames in {summary['seconds']:.1f} s; "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; outputs in {args.out}")
  for rec in summary["results"]:
    if rec["status"] == "failed":
      print(f"  failed {rec['name']}: {rec['message']}")
  return 1 if counts.get("failed") else 0


def run(args: argparse.Namespace) -> int:
  """The `generate` subcommand; returns the exit code (1 when a job failed, 2 on bad input)."""
  from pcavs_jax.data.media import InputError
  try:
    if args.reference:
      if not args.audio:
        raise InputError("--audio", "single mode needs --audio with --reference", "missing")
      return _single(args)
    if args.audio or args.pose or args.mouth_source:
      raise InputError("--audio/--pose", "only with --reference (single mode); batch jobs name "
                       "them in the manifest", "invalid")
    return _batch(args)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
