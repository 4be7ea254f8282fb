"""Time per driven frame of `generate`, end to end, beside the network alone.

End to end is `pcavs_jax.infer.generate`: read and align the reference photo, decode and align the
pose video, read the audio and compute the mel, encode the identity, run the network in device
batches, write the h264 + AAC mp4. Network only is the jitted drive (E_n on the pose frame, E_a on
the mel window, G) on ready device batches. The official configuration (224 px) with random weights:
no trained weights exist, and the time does not depend on the values.

The inputs are made here: skimage's astronaut photo as the reference (512 x 512), a 512 x 512 pose
video of the photo turning a little, and a speech-like buzz as the audio.

  python scripts/bench_generate.py                        # 224 px, 50 frames, batch 4
  python scripts/bench_generate.py --frames 25 --batch-size 2 --resolution 112 --width 0.5
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np

from bench_train import fastest_call_seconds  # this folder is on sys.path
from pcavs_jax.models.config import model_config
from pcavs_jax.infer import api, runner
from pcavs_jax.data import media
from pcavs_jax.models.pcavs import build_model

STAGES = (("audio", "audio read (decode, 16 kHz mono, checks)"),
          ("mel", "mel + windows"),
          ("reference", "reference read + detect + align"),
          ("pose", "pose video decode + detect + align"),
          ("identity", "identity encoding (E_i, once)"),
          ("assemble", "batch assembly (host)"),
          ("network", "network (dispatch + wait)"),
          ("write", "mp4 write (h264 + AAC, rename)"))


def _speech_like(seconds: float, sr: int = 16000) -> np.ndarray:
  t = np.arange(int(seconds * sr)) / sr
  phase = 2 * np.pi * np.cumsum(120.0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))) / sr
  voice = sum(np.sin(k * phase) / k for k in range(1, 20))
  wav = voice * (0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2)
  return (0.3 * wav / np.abs(wav).max()).astype(np.float32)


def _inputs(d: pathlib.Path, frames: int) -> dict[str, pathlib.Path]:
  import cv2
  from skimage import data
  img = data.astronaut()
  h, w = img.shape[:2]
  moving = []
  for i in range(frames):
    m = cv2.getRotationMatrix2D((w / 2, h / 3), 4.0 * np.sin(i / 6.0), 1.0)
    m[:, 2] += (3 * np.sin(i / 4.0), 2 * np.cos(i / 8.0))
    moving.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
  media.write_image(d / "reference.png", img)
  media.write_video(d / "pose.mp4", np.stack(moving))
  import soundfile
  soundfile.write(str(d / "speech.wav"), _speech_like(frames / media.FPS), 16000)
  return {"reference": d / "reference.png", "pose": d / "pose.mp4", "audio": d / "speech.wav"}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=50, help="driven frames (audio length)")
  parser.add_argument("--batch-size", type=int, default=4, help="frames per device per call")
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--repeats", type=int, default=3, help="network-only repeats (best kept)")
  args = parser.parse_args()

  import jax
  config = model_config(args.resolution, args.width)
  model = build_model(config)
  t0 = time.perf_counter()
  variables = runner.random_variables(model)
  driver = runner.FrameDriver(model, variables, batch_size=args.batch_size)
  setup = time.perf_counter() - t0
  r, b = driver.resolution, driver.batch_size
  print(f"device: {jax.devices()[0].device_kind} x{driver.num_devices}; {r}x{r}, width "
        f"{args.width}; batch {b}; {args.frames} frames ({args.frames / media.FPS:.1f} s of audio)")

  with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
    d = pathlib.Path(tmp)
    paths = _inputs(d, args.frames)
    # Warm-up: compiles E_i and the batch shape, imports librosa, loads the Haar cascades.
    t0 = time.perf_counter()
    api.generate(driver, paths["reference"], paths["audio"], d / "warm.mp4", paths["pose"],
                 max_frames=b, progress=False)
    warm = time.perf_counter() - t0

    t0 = time.perf_counter()
    rec = api.generate(driver, paths["reference"], paths["audio"], d / "out.mp4",
                       paths["pose"], progress=False)
    total = time.perf_counter() - t0
    info = media.probe(d / "out.mp4")
    assert rec["frames"] == args.frames and info.video_codec == "h264" and info.has_audio

    # Network only: the same jitted call on ready batches.
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (1, r, r, 3), dtype=np.uint8)
    id_vector, id_map = driver.encode_identity(ref)
    batch = (np.stack([id_vector] * b), np.stack([id_map] * b),
             rng.uniform(0, 1, (b, 80, 20)).astype(np.float32),
             rng.integers(0, 256, (b, r, r, 3), dtype=np.uint8))
    on_device = jax.device_put(batch, driver._sharded)
    drive = runner.jitted(model, "drive")
    network = fastest_call_seconds(drive, [driver.variables, *on_device], args.repeats) / b

  n = args.frames
  timings = rec["timings"]
  print(f"setup (random weights, device_put): {setup:.1f} s; warm-up (compile) {warm:.1f} s")
  print(f"\n{'stage':42s} {'seconds':>9s} {'ms/frame':>9s} {'share':>7s}")
  for key, label in STAGES:
    v = timings.get(key, 0.0)
    print(f"{label:42s} {v:9.2f} {1000 * v / n:9.1f} {100 * v / total:6.1f}%")
  other = total - sum(timings.get(k, 0.0) for k, _ in STAGES)
  print(f"{'other (bookkeeping)':42s} {other:9.2f} {1000 * other / n:9.1f} "
        f"{100 * other / total:6.1f}%")
  print(f"{'total, end to end':42s} {total:9.2f} {1000 * total / n:9.1f}")
  print(f"\nend to end:   {total / n:.3f} s per driven frame ({n / total:.2f} frames/s)")
  print(f"network only: {network:.3f} s per driven frame ({1 / network:.2f} frames/s), "
        f"batch {b}, best of {args.repeats}")
  print(f"overhead of preparation and writing: {100 * (total / n - network) / (total / n):.1f}% "
        "of the end-to-end time")


if __name__ == "__main__":
  main()
