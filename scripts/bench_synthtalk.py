"""Speed of the SynthTalk generator: clips/s at 64 and 224 px on this machine.

  python scripts/bench_synthtalk.py                      # 6 clips of 50 frames per resolution
  python scripts/bench_synthtalk.py --clips 20 --encode  # also JPEG + TFRecord serialisation

A clip is everything `pcavs-jax synthtalk` makes for it: identity, phonemes, formant audio,
mel, head motion and the rendered frames (and, with --encode, its serialised record).
"""
from __future__ import annotations

import argparse
import time

from data_pipeline.synthtalk import generate


def bench(resolution: int, clips: int, frames: int, encode: bool) -> float:
  """Clips per second at one resolution (after one warm-up clip)."""
  from pcavs_jax.data import records
  generate.make_clip(0, 0, 0, frames, resolution)
  start = time.perf_counter()
  for c in range(clips):
    clip = generate.make_clip(0, c, 1, frames, resolution)
    if encode:
      records.encode_clip(clip)
  return clips / (time.perf_counter() - start)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--clips", type=int, default=6)
  p.add_argument("--frames", type=int, default=50)
  p.add_argument("--resolutions", default="64,224")
  p.add_argument("--encode", action="store_true", help="include JPEG + record encoding")
  args = p.parse_args()
  if args.encode:
    from pcavs_jax.data import records
    records.encode_clip(generate.make_clip(0, 0, 0, 2, 32))   # import TensorFlow up front
  for res in (int(r) for r in args.resolutions.split(",")):
    rate = bench(res, args.clips, args.frames, args.encode)
    print(f"synthtalk {res:4d} px, {args.frames} frames/clip: {rate:6.2f} clips/s "
          f"({rate * args.frames:7.1f} frames/s)", flush=True)


if __name__ == "__main__":
  main()
