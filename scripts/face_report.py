"""Measurements of the face stage for issue reports (not part of the library).

  python scripts/face_report.py video OUT_TREE [--frames 75] [--proportioned] [--photo IMG]
      writes OUT_TREE/speaker/clip/00001.mp4: skimage's astronaut (or the face of IMG) turned,
      scaled and moved over the frames (a head that moves), with a tone as speech
      (`--proportioned`: the photo first stretched to the template's eye-to-mouth proportions,
      see template_proportioned).
  python scripts/face_report.py degrade VIDEO OUT.mp4 [--shift 3] [--blur 1.0] [--jpeg 40]
      a stand-in for a generated video with a real face: VIDEO's frames moved by up to SHIFT
      px (a different offset per frame), Gaussian-blurred (sigma BLUR px) and JPEG-compressed
      (quality JPEG), its audio kept; `pcavs-jax evaluate --generated OUT.mp4 --truth VIDEO`
      then gives LMD, CSIM and pose errors as numbers (random-weight `generate` draws no face).
  python scripts/face_report.py alignment RECORDS [--split train]
      68-point landmarks found again on the aligned frames of a clip-record folder: the
      clip-mean eye and inner-mouth centres against the official targets (87, 59), (137, 59),
      (112, 120), and each frame's inner-mouth centre against (112, 120), in pixels at 224.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def template_proportioned(image: np.ndarray) -> np.ndarray:
  """The photo stretched vertically so that its face has the template's proportions (mouth
  centre 1.22 eye distances below the eye line): the official alignment can then put the eyes
  and the mouth on the template at once. Other faces keep a residual (the least-squares fit)."""
  import cv2
  from pcavs_jax.data import alignment, face
  analyzer = face.get_analyzer()
  kp = face.keypoints_from_68(analyzer.landmarks(image, analyzer.detect(image)[0]))
  ratio = (kp[2, 1] - kp[:2, 1].mean()) / (kp[1, 0] - kp[0, 0])
  t = alignment.TEMPLATE_224
  stretch = (t[2, 1] - t[0, 1]) / (t[1, 0] - t[0, 0]) / ratio
  h, w = image.shape[:2]
  return cv2.resize(image, (w, round(h * stretch)), interpolation=cv2.INTER_CUBIC)


ASTRONAUT_EYE_DISTANCE = 43.6   # px, between dlib's eye centres on skimage's astronaut


def face_frame(image: np.ndarray) -> tuple[tuple[float, float], float]:
  """Where the head turns about (the centre of the eyes and mouth) and the scale that gives the
  face the astronaut's size, from the 68 landmarks of the photo's largest face."""
  from pcavs_jax.data import face
  analyzer = face.get_analyzer()
  boxes = analyzer.detect(image)
  if not boxes:
    raise SystemExit("no face found in the photo")
  kp = face.keypoints_from_68(analyzer.landmarks(image, boxes[0]))
  centre = kp.mean(0)
  return (float(centre[0]), float(centre[1])), ASTRONAUT_EYE_DISTANCE / float(
      np.linalg.norm(kp[1] - kp[0]))


def head_moving_frames(frames: int = 75, size: int = 320, proportioned: bool = False,
                       photo: np.ndarray | None = None) -> np.ndarray:
  """(frames, size, size, 3) uint8: the astronaut's face (or `photo`'s largest face, brought to
  the astronaut's size) under a smooth similarity per frame (`proportioned`: stretched to the
  template's proportions first)."""
  import cv2
  from skimage import data
  img = data.astronaut() if photo is None else photo
  if proportioned:
    img = template_proportioned(img)
  centre, base = ((225.0, 125.0), 1.0) if photo is None else face_frame(img)
  out = []
  for t in range(frames):
    angle = 8.0 * np.sin(2 * np.pi * t / frames)                  # degrees
    scale = 1.0 + 0.1 * np.sin(2 * np.pi * t / 50)
    shift = np.array([20 * np.sin(2 * np.pi * t / 60), 12 * np.cos(2 * np.pi * t / 40)])
    m = cv2.getRotationMatrix2D(centre, angle, scale * base)
    m[:, 2] += np.array([size / 2, size * 0.45]) - centre + shift
    out.append(cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT))
  return np.stack(out)


def tone(frames: int, seed: int = 0) -> np.ndarray:
  """A modulated tone plus noise, frames * 640 samples at 16 kHz (passes the speech check)."""
  n = frames * 640
  t = np.arange(n) / 16000
  wav = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
  return (wav + 0.03 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def write_video_tree(out: pathlib.Path, frames: int, proportioned: bool = False,
                     photo: np.ndarray | None = None) -> pathlib.Path:
  from pcavs_jax.data import media
  path = out / "speaker" / "clip" / "00001.mp4"
  path.parent.mkdir(parents=True, exist_ok=True)
  media.write_video(path, head_moving_frames(frames, proportioned=proportioned, photo=photo),
                    audio=tone(frames))
  return path


def degrade_frames(frames: np.ndarray, shift: float = 3.0, blur: float = 1.0,
                   jpeg: int = 40) -> np.ndarray:
  """Frames as a mediocre generator might give them: frame t moved by
  shift * (sin(t / 3), cos(t / 5)) px, blurred with a Gaussian of sigma `blur` px (0: none) and
  passed through JPEG at quality `jpeg` (100: none)."""
  import cv2
  h, w = frames.shape[1:3]
  out = []
  for t, frame in enumerate(frames):
    m = np.float32([[1, 0, shift * np.sin(t / 3.0)], [0, 1, shift * np.cos(t / 5.0)]])
    f = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    if blur > 0:
      f = cv2.GaussianBlur(f, (0, 0), blur)
    if jpeg < 100:
      _, buf = cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg)])
      f = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    out.append(f)
  return np.stack(out)


def write_degraded(video: pathlib.Path, out: pathlib.Path, shift: float, blur: float,
                   jpeg: int) -> pathlib.Path:
  from pcavs_jax.data import media
  frames = media.read_video(video)
  audio = media.read_audio(video) if media.probe(video).has_audio else None
  out.parent.mkdir(parents=True, exist_ok=True)
  media.write_video(out, degrade_frames(frames, shift, blur, jpeg), audio=audio)
  return out


def alignment_errors(aligned: np.ndarray) -> dict:
  """Errors of aligned frames against the official targets, from landmarks found on them."""
  from pcavs_jax.data import alignment, face
  analyzer = face.get_analyzer()
  track = face.track_faces(aligned, analyzer)
  kp = track.keypoints[track.found] * (224.0 / aligned.shape[1])
  target = alignment.template(224)
  mean = kp.mean(0)
  per_frame = np.linalg.norm(kp[:, 2] - target[2], axis=-1)
  return {"frames": int(len(aligned)), "frames_with_face": int(track.found.sum()),
          "clip_mean_error_px": {"left_eye": float(np.linalg.norm(mean[0] - target[0])),
                                 "right_eye": float(np.linalg.norm(mean[1] - target[1])),
                                 "mouth": float(np.linalg.norm(mean[2] - target[2]))},
          "per_frame_mouth_error_px": {"mean": float(per_frame.mean()),
                                       "max": float(per_frame.max())}}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  v = sub.add_parser("video")
  v.add_argument("out")
  v.add_argument("--frames", type=int, default=75)
  v.add_argument("--proportioned", action="store_true")
  v.add_argument("--photo", help="a photo whose largest face moves (default: the astronaut)")
  d = sub.add_parser("degrade")
  d.add_argument("video")
  d.add_argument("out")
  d.add_argument("--shift", type=float, default=3.0, help="largest offset per frame, px")
  d.add_argument("--blur", type=float, default=1.0, help="Gaussian sigma, px (0: none)")
  d.add_argument("--jpeg", type=int, default=40, help="JPEG quality (100: none)")
  a = sub.add_parser("alignment")
  a.add_argument("records")
  a.add_argument("--split", default="train")
  args = parser.parse_args()
  if args.command == "video":
    photo = None
    if args.photo:
      from pcavs_jax.data import media
      photo = media.read_image(args.photo)
    print(write_video_tree(pathlib.Path(args.out), args.frames, args.proportioned, photo))
    return 0
  if args.command == "degrade":
    print(write_degraded(pathlib.Path(args.video), pathlib.Path(args.out), args.shift, args.blur,
                         args.jpeg))
    return 0
  from pcavs_jax.data import records
  for clip in records.read_clips(args.records, args.split):
    print(json.dumps({"clip": clip.clip_id, **alignment_errors(clip.frames)}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
