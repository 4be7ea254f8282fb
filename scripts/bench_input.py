"""Throughput of the training input pipeline (examples/s) on this machine.

  python scripts/bench_input.py                       # synthetic records, 64 and 224 px
  python scripts/bench_input.py --data_dir DIR --resolutions 224 --batch_size 32

Without --data_dir, a small temporary record set of synthetic face-like frames is written for
each record size (64 px as SynthTalk-sized records, 224 px as preprocessed real video), and each
output resolution is read from records of its own size; 224 px records are also read at 64 px
(JPEG DCT downscaling). Examples/s counts training examples (one target window each) arriving
as numpy batches on the host, and after `prefetch_to_device`.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import cv2
import numpy as np

from pcavs_jax.data import records
from pcavs_jax.data import input_pipeline
from pcavs_jax.data.clips import Clip


def synthetic_clip(i: int, size: int, num_frames: int, rng: np.random.Generator) -> Clip:
  """A face-like clip: textured background, skin ellipse, eyes, a mouth that opens and closes."""
  s = size / 224
  noise = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
  background = cv2.GaussianBlur(noise, (0, 0), 3 * s)
  skin = tuple(int(c) for c in np.random.default_rng(i // 2).integers(120, 230, 3))  # per identity
  frames = []
  for t in range(num_frames):
    img = background.copy()
    cx, cy = size // 2 + int(4 * s * np.sin(t / 7)), size // 2
    cv2.ellipse(img, (cx, cy), (int(70 * s), int(95 * s)), 0, 0, 360, skin, -1)
    for ex in (-28, 28):
      cv2.circle(img, (cx + int(ex * s), cy - int(25 * s)), max(1, int(8 * s)), (40, 30, 30), -1)
    opening = max(1, int(abs(np.sin(t / 3)) * 18 * s))
    cv2.ellipse(img, (cx, cy + int(45 * s)), (int(25 * s), opening), 0, 0, 360, (120, 40, 50), -1)
    frames.append(img)
  return Clip(clip_id=f"bench/{i:04d}", identity=f"id{i // 2}", label=i // 2,
              frames=np.stack(frames), audio=np.zeros(num_frames * 640, np.float32),
              mel=rng.random((4 * num_frames + 4, 80)).astype(np.float32),
              truth={"yaw": rng.standard_normal(num_frames).astype(np.float32)},
              source="bench")


def write_synthetic(out_dir: str, size: int, num_clips: int, num_frames: int) -> None:
  rng = np.random.default_rng(0)
  records.write_clips((synthetic_clip(i, size, num_frames, rng) for i in range(num_clips)),
                      out_dir, "train", num_shards=4)


def measure(data_dir: str, args: argparse.Namespace, resolution: int, on_device: bool) -> float:
  cfg = input_pipeline.data_config()
  cfg.update(resolution=resolution, batch_size=args.batch_size, clip_len=args.clip_len,
             num_inputs=args.num_inputs, shuffle_buffer=args.shuffle_buffer,
             augment_pose_source=not args.no_augment)
  ds = input_pipeline.create_train_dataset(cfg, data_dir, seed=0)
  it = (input_pipeline.device_iterator(ds) if on_device else input_pipeline.numpy_iterator(ds))
  for batch in itertools.islice(it, args.warmup):
    pass
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < args.seconds:
    batch = next(it)
    if on_device:
      batch["target"].block_until_ready()
    count += args.batch_size
  return count / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", help="record folder; default: temporary synthetic records")
  parser.add_argument("--resolutions", default="64,224")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--clip_len", type=int, default=1)
  parser.add_argument("--num_inputs", type=int, default=1)
  parser.add_argument("--shuffle_buffer", type=int, default=256)
  parser.add_argument("--no_augment", action="store_true")
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--clips", type=int, default=32, help="synthetic clips per record size")
  parser.add_argument("--frames", type=int, default=75, help="frames per synthetic clip")
  args = parser.parse_args()
  import jax
  resolutions = [int(r) for r in args.resolutions.split(",")]

  runs = []  # (output resolution, record folder, record size)
  with tempfile.TemporaryDirectory() as tmp:
    if args.data_dir:
      runs = [(r, args.data_dir, "given") for r in resolutions]
    else:
      for r in resolutions:
        write_synthetic(f"{tmp}/r{r}", r, args.clips, args.frames)
        runs.append((r, f"{tmp}/r{r}", r))
      if 224 in resolutions:
        runs += [(r, f"{tmp}/r224", 224) for r in resolutions if r < 224]
    print(f"devices: {jax.local_device_count()} x {jax.devices()[0].platform}; batch "
          f"{args.batch_size}, clip_len {args.clip_len}, num_inputs {args.num_inputs}, "
          f"augment {not args.no_augment}")
    print(f"{'out px':>6} {'records px':>10} {'host ex/s':>10} {'device ex/s':>12}")
    for resolution, data_dir, record_size in runs:
      host = measure(data_dir, args, resolution, on_device=False)
      device = measure(data_dir, args, resolution, on_device=True)
      print(f"{resolution:>6} {record_size!s:>10} {host:>10.1f} {device:>12.1f}", flush=True)


if __name__ == "__main__":
  main()
