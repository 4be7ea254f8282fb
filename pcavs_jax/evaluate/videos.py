"""Evaluation of generated talking faces: SSIM, PSNR, CPBD, LMD, CSIM, head-pose error, and
SynthTalk's exact measures.

  pcavs-jax evaluate --generated GEN --truth TRUTH [--reference IMG] [--pose-source POSE]
      [--detector hog|cnn] [--report R.json]
  pcavs-jax evaluate --generated DIR --synthtalk EVAL_SET.npz [--report R.json]

GEN and TRUTH are each a video, a folder of frames, or a folder of those (matched by relative
name: `generate --manifest` or `--records` outputs against truth videos); TRUTH may also be a
clip-record folder (`--split`, matched by clip id, e.g. against `generate --records`). REFERENCE
(the identity photo) and POSE (the pose source) are one file used for every video, or a folder
holding one per video under the same name.

Measures (generated frames are resized to the truth's size; the first min(T_gen, T_truth) frames
are compared; the JSON report keeps every per-frame value):
- ssim: mean per-frame SSIM (skimage, RGB, data range 255).
- psnr: mean per-frame PSNR in dB (skimage), capped at 100 for identical frames.
- cpbd: the no-reference sharpness of Narvekar & Karam (IEEE TIP 2011), cumulative probability
  of blur detection, of the generated frames (`cpbd_truth`: of the truth frames); higher is
  sharper.
- lmd: mouth landmark distance, the mean distance in pixels between the 20 mouth landmarks
  (48-67 of dlib's 68 points) of generated and truth frames, each video in its own official
  224 x 224 alignment (`pcavs_jax.data.face`), as the paper reports it. Lower is better.
- csim: identity similarity, the cosine similarity of dlib's 128-d face descriptors of the
  reference photo and each generated frame (without --reference: truth frame t against generated
  frame t). Higher is better; two photos of one person score about 0.95, of two people 0.8.
- pose_err_yaw, pose_err_pitch, pose_err_roll: head-pose error, the mean absolute difference in
  degrees between the generated frames' and the pose-source frames' yaw, pitch and roll
  (`face.head_pose`: solvePnP of the 68 points on a generic 3-D face); the pose source is the
  truth unless --pose-source is given.
- SynthTalk (`--synthtalk`): `pcavs_jax.evaluate.scoring.score`, the exact mouth, pose and
  identity errors against the rendered truth and the audio-to-mouth lag and sync, beside the
  baselines' scores (`baselines.json` next to the set) and the CPBD of the generated frames.
Frames without a usable face (none, or a profile) are left out of the face measures and counted
in `faces`; with several faces the largest is used (noted).

Not supported: SyncNet's LSE-C / LSE-D. They need the SyncNet weights, which cannot be obtained
or tested here, so no number is reported rather than an untested one; on SynthTalk, `lag` and
`sync` measure audio-to-mouth synchronisation against the exact truth.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from pcavs_jax.data import media
from pcavs_jax.data.media import InputError

PathLike = str | os.PathLike

# CPBD constants (Narvekar & Karam 2011).
CPBD_BLOCK = 64               # blocks of 64 x 64 pixels
CPBD_EDGE_BLOCK = 0.002       # an edge block holds more than 0.2 % edge pixels
CPBD_BETA = 3.6               # slope of the probability-of-blur-detection curve
CPBD_P_JNB = 0.63             # the probability of detecting blur at the JNB width
CPBD_JNB_WIDTHS = (5.0, 3.0)  # JNB edge width for block contrast <= 50, > 50
CPBD_LOW_CONTRAST = 50
CPBD_MAX_STEPS = 100          # an edge extends at most this many pixels on each side
PSNR_CAP = 100.0
MOUTH = slice(48, 68)         # mouth points of the 68-point layout
NOT_SUPPORTED = {
    "LSE-C/LSE-D": "not supported: SyncNet's lip-sync confidence and distance need the SyncNet "
                   "weights, which cannot be obtained or tested here. On SynthTalk, 'lag' and "
                   "'sync' measure audio-mouth synchronisation against the exact truth."}


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def to_gray(frame: np.ndarray) -> np.ndarray:
  """Luma in [0, 255] as float64 (ITU-R BT.601 weights, as MATLAB's rgb2gray)."""
  f = np.asarray(frame, np.float64)
  if f.ndim == 2:
    return f
  return f[..., 0] * 0.2989 + f[..., 1] * 0.5870 + f[..., 2] * 0.1140


def _sobel_vertical_edges(gray: np.ndarray) -> np.ndarray:
  """Vertical edges: Sobel horizontal gradient squared above 4x its mean, thinned along rows.

  The detector of the CPBD reference (MATLAB `edge(I, 'sobel', [], 'vertical')` defaults).
  """
  from scipy import ndimage
  gx = ndimage.correlate(gray, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8.0,
                         mode="nearest")
  strength = gx * gx
  cutoff = 4.0 * strength.mean()
  left = np.pad(strength, ((0, 0), (1, 0)), mode="edge")[:, :-1]
  right = np.pad(strength, ((0, 0), (0, 1)), mode="edge")[:, 1:]
  edges = (strength > cutoff) & (strength > left) & (strength >= right)
  edges[[0, -1], :] = False
  edges[:, [0, -1]] = False
  return edges


def edge_widths(gray: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """Marziliano edge widths along rows at edge pixels whose gradient is horizontal (else 0).

  From an edge pixel the width walks left and right while the intensity keeps rising (or
  falling) monotonically, to the local extrema on both sides; width = steps left + steps right.
  Only gradients quantised (to 45 degrees) to 0 or 180 degrees are measured, as in the reference.
  """
  h, w = gray.shape
  gy, gx = np.gradient(gray)
  angle = np.degrees(np.arctan2(gy, gx))
  quant = 45.0 * np.round(angle / 45.0)
  d = np.diff(gray, axis=1)                      # d[:, j] = I[:, j + 1] - I[:, j]
  widths = np.zeros((h, w))
  for sign, want in ((1.0, (0.0,)), (-1.0, (180.0, -180.0))):
    mono = sign * d > 0
    left = np.zeros(d.shape, np.int64)           # run of monotone steps ending at column j
    right = np.zeros(d.shape, np.int64)          # run of monotone steps starting at column j
    for j in range(d.shape[1]):
      left[:, j] = np.where(mono[:, j], (left[:, j - 1] if j else 0) + 1, 0)
    for j in range(d.shape[1] - 1, -1, -1):
      right[:, j] = np.where(mono[:, j], (right[:, j + 1] if j + 1 < d.shape[1] else 0) + 1, 0)
    rows, cols = np.nonzero(edges & np.isin(quant, want) & (gx != 0))
    steps_left = 1 + np.where(cols - 2 >= 0,
                              np.minimum(left[rows, np.maximum(cols - 2, 0)], CPBD_MAX_STEPS), 0)
    steps_right = 1 + np.where(cols + 1 <= w - 2,
                               np.minimum(right[rows, np.minimum(cols + 1, w - 2)],
                                          CPBD_MAX_STEPS), 0)
    widths[rows, cols] = steps_left + steps_right
  return widths


def cpbd(frame: np.ndarray) -> float:
  """Cumulative probability of blur detection (Narvekar & Karam, IEEE TIP 2011) of one image.

  The image is cut into 64 x 64 blocks; blocks with more than 0.2 % Canny edge pixels are edge
  blocks. In an edge block each vertical (Sobel) edge pixel's width w is compared with the
  just-noticeable-blur width w_JNB (5 for block contrast <= 50, else 3):
  P_blur = 1 - exp(-|w / w_JNB|^3.6). CPBD is the fraction of edges with P_blur <= P_JNB = 63 %
  (the cumulative histogram of P_blur, bins of 0.01, at 0.63). 1 is sharp, 0 blurred.

  Args:
    frame: (H, W, 3) RGB or (H, W) gray, uint8 values (or floats in [0, 255]).

  Returns:
    CPBD in [0, 1]; NaN when the image has no measurable edge (e.g. flat).
  """
  from skimage import feature
  gray = to_gray(frame)
  canny = feature.canny(gray / 255.0)
  sobel = _sobel_vertical_edges(gray)
  widths = edge_widths(gray, sobel)
  probs = []
  bs = CPBD_BLOCK
  for y in range(0, gray.shape[0] - bs + 1, bs):
    for x in range(0, gray.shape[1] - bs + 1, bs):
      if canny[y:y + bs, x:x + bs].sum() <= CPBD_EDGE_BLOCK * bs * bs:
        continue
      block = gray[y:y + bs, x:x + bs]
      contrast = int(round(block.max() - block.min()))
      w_jnb = CPBD_JNB_WIDTHS[0] if contrast <= CPBD_LOW_CONTRAST else CPBD_JNB_WIDTHS[1]
      w = widths[y:y + bs, x:x + bs]
      w = w[w > 0]
      probs.append(1.0 - np.exp(-np.abs(w / w_jnb) ** CPBD_BETA))
  p = np.concatenate(probs) if probs else np.zeros(0)
  if p.size == 0:
    return math.nan
  return float(np.mean(np.round(p * 100.0) <= round(CPBD_P_JNB * 100)))


def mean_cpbd(frames: np.ndarray, every: int = 1) -> float:
  """Mean CPBD over frames (every `every`-th), ignoring frames without edges."""
  values = [cpbd(f) for f in frames[::max(1, every)]]
  finite = [v for v in values if np.isfinite(v)]
  return float(np.mean(finite)) if finite else math.nan


def ssim_per_frame(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """(T,) SSIM of two (T, H, W, 3) uint8 videos (skimage, RGB, range 255)."""
  from skimage import metrics
  return np.array([metrics.structural_similarity(g, t, channel_axis=-1, data_range=255)
                   for g, t in zip(generated, truth)], np.float64)


def ssim(generated: np.ndarray, truth: np.ndarray) -> float:
  """Mean per-frame SSIM of two (T, H, W, 3) uint8 videos."""
  return float(ssim_per_frame(generated, truth).mean())


def psnr_per_frame(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """(T,) PSNR (dB) of two uint8 videos, identical frames counted as 100 dB."""
  from skimage import metrics
  return np.array([PSNR_CAP if np.array_equal(g, t) else
                   min(PSNR_CAP, metrics.peak_signal_noise_ratio(t, g, data_range=255))
                   for g, t in zip(generated, truth)], np.float64)


def psnr(generated: np.ndarray, truth: np.ndarray) -> float:
  """Mean per-frame PSNR (dB) of two uint8 videos, identical frames counted as 100 dB."""
  return float(psnr_per_frame(generated, truth).mean())


# Face measures: LMD, CSIM, head-pose error (`pcavs_jax.data.face`, dlib's 68 points).


def aligned_landmarks(track, size: int = 224) -> np.ndarray:
  """(T, 68, 2) landmarks of a `face.FaceTrack` in the clip's official alignment at `size` px
  (NaN where no usable face; all NaN when the clip shows none)."""
  from pcavs_jax.data import face
  if not track.found.any():
    return np.full(track.landmarks.shape, np.nan)
  _, transforms = face.official_transforms(track.keypoints, track.found, size)
  return face.apply_frame_transforms(transforms, track.landmarks)


def lmd_per_frame(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """(T,) mean distance of the 20 mouth landmarks (48-67) of two (T, 68, 2) landmark arrays
  (NaN where either side has none)."""
  return np.linalg.norm(generated[:, MOUTH] - truth[:, MOUTH], axis=-1).mean(-1)


def descriptors(frames: np.ndarray, track, analyzer) -> np.ndarray:
  """(T, 128) dlib face descriptors of tracked frames (NaN where no usable face)."""
  out = np.full((len(frames), 128), np.nan)
  for i in np.flatnonzero(track.found):
    out[i] = analyzer.descriptor(frames[i], track.landmarks[i])
  return out


def csim_per_frame(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """(T,) cosine similarity of (T, 128) descriptors with (128,) or (T, 128) ones (NaN-safe)."""
  ref = np.broadcast_to(reference, generated.shape)
  dot = (generated * ref).sum(-1)
  return dot / (np.linalg.norm(generated, axis=-1) * np.linalg.norm(ref, axis=-1))


def head_poses(track) -> np.ndarray:
  """(T, 3) yaw, pitch, roll in degrees of tracked frames (NaN where no usable face)."""
  from pcavs_jax.data import face
  return np.stack([face.head_pose(lm) for lm in track.landmarks])


def pose_error_per_frame(generated: np.ndarray, source: np.ndarray) -> np.ndarray:
  """(T, 3) absolute yaw, pitch, roll differences in degrees (wrapped to [0, 180])."""
  d = np.abs(generated - source) % 360.0
  return np.minimum(d, 360.0 - d)


def match_frames(generated: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   list[str]]:
  """Cuts both to the shorter length and resizes generated frames to the truth's size."""
  import cv2
  notes = []
  t = min(len(generated), len(truth))
  if len(generated) != len(truth):
    notes.append(f"{len(generated)} generated vs {len(truth)} truth frames: compared {t}")
  g, tr = generated[:t], truth[:t]
  if g.shape[1:3] != tr.shape[1:3]:
    notes.append(f"generated {g.shape[2]}x{g.shape[1]} resized to {tr.shape[2]}x{tr.shape[1]}")
    interp = cv2.INTER_AREA if g.shape[1] > tr.shape[1] else cv2.INTER_LINEAR
    g = np.stack([cv2.resize(f, (tr.shape[2], tr.shape[1]), interpolation=interp) for f in g])
  return g, tr, notes


FACE_KEYS = ("lmd", "csim", "pose_err_yaw", "pose_err_pitch", "pose_err_roll")


def face_measures(generated: np.ndarray, truth: np.ndarray, analyzer, *,
                  reference: np.ndarray | None = None, pose_source: np.ndarray | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, int], list[str]]:
  """Per-frame LMD, CSIM and head-pose errors of generated frames (see the module docstring).

  Args:
    generated, truth: (T, H, W, 3) uint8 of the same length.
    analyzer: a `face.FaceAnalyzer` with landmarks (dlib).
    reference: (128,) descriptor of the reference photo; None compares truth frame t.
    pose_source: (P, H, W, 3) pose-source frames (the first T are used); None: the truth.

  Returns:
    (per-frame values by FACE_KEYS, frames with a usable face per video, notes).
  """
  from pcavs_jax.data import face
  tracks = {"generated": face.track_faces(generated, analyzer),
            "truth": face.track_faces(truth, analyzer)}
  if pose_source is not None:
    tracks["pose_source"] = face.track_faces(pose_source[:len(generated)], analyzer)
  notes = [n for name, tr in tracks.items() for n in tr.notes(name)]
  notes += [f"{name}: no usable face in any frame" for name, tr in tracks.items()
            if not tr.found.any()]
  gen, tru = tracks["generated"], tracks["truth"]
  if reference is None:
    reference = descriptors(truth, tru, analyzer)
  poses = head_poses(tracks.get("pose_source", tru))
  if len(poses) == 1:   # a pose image: one pose held for every frame
    poses = np.repeat(poses, len(generated), axis=0)
  t = min(len(generated), len(poses))
  pose_err = np.full((len(generated), 3), np.nan)
  pose_err[:t] = pose_error_per_frame(head_poses(gen)[:t], poses[:t])
  values = {"lmd": lmd_per_frame(aligned_landmarks(gen), aligned_landmarks(tru)),
            "csim": csim_per_frame(descriptors(generated, gen, analyzer), reference),
            "pose_err_yaw": pose_err[:, 0], "pose_err_pitch": pose_err[:, 1],
            "pose_err_roll": pose_err[:, 2]}
  return values, {name: int(tr.found.sum()) for name, tr in tracks.items()}, notes


def evaluate_pair(generated: np.ndarray, truth: np.ndarray, analyzer=None, *,
                  reference: np.ndarray | None = None, pose_source: np.ndarray | None = None,
                  cpbd_every: int = 1) -> dict[str, Any]:
  """SSIM, PSNR, CPBD (generated and truth), LMD, CSIM and pose errors of one generated video.

  Args:
    generated, truth: (T, H, W, 3) uint8.
    analyzer: `face.FaceAnalyzer` for the face measures; None, or one without landmarks (no
      dlib), reports them as unavailable (NaN).
    reference: (128,) descriptor of the reference photo for CSIM (None: the truth frames).
    pose_source: pose-source frames for the pose error (None: the truth).
    cpbd_every: CPBD on every n-th frame (it is the slowest measure).

  Returns:
    means by measure, 'frames', 'per_frame' (measure -> list), 'faces' and 'notes'.
  """
  g, t, notes = match_frames(generated, truth)
  if len(g) == 0:
    raise ValueError("no frames to compare")
  per_frame = {"ssim": ssim_per_frame(g, t), "psnr": psnr_per_frame(g, t)}
  faces: dict[str, int] = {}
  if analyzer is not None and analyzer.has_landmarks:
    values, faces, face_notes = face_measures(g, t, analyzer, reference=reference,
                                              pose_source=pose_source)
    per_frame.update(values)
    notes += face_notes
  out = {"frames": int(len(g)), **{k: _nanmean(v) for k, v in per_frame.items()},
         "cpbd": mean_cpbd(g, cpbd_every), "cpbd_truth": mean_cpbd(t, cpbd_every)}
  out.update({k: math.nan for k in FACE_KEYS if k not in out})
  out["per_frame"] = {k: v.tolist() for k, v in per_frame.items()}
  if faces:
    out["faces"] = faces
  if notes:
    out["notes"] = notes
  return out


# ----------------------------------------------------------------------------------------------
# Reading videos and pairing them
# ----------------------------------------------------------------------------------------------


def read_frames(path: PathLike, max_frames: int | None = None) -> np.ndarray:
  """(T, H, W, 3) uint8 frames of a video (at 25 fps), a folder of frames, or an .npy array.

  Raises:
    InputError: unreadable input.
  """
  p = pathlib.Path(path)
  if p.is_dir():
    files = sorted(f for f in p.iterdir() if media.is_image_path(f) and not f.name.startswith("."))
    if not files:
      raise InputError(p, "folder holds no frames", "missing")
    frames = np.stack([media.read_image(f, max_side=None) for f in files[:max_frames]])
  elif p.suffix.lower() == ".npy":
    if not p.exists():
      raise InputError(p, "frames file not found", "missing")
    try:
      frames = np.load(p)
    except Exception as e:
      raise InputError(p, f"not a readable .npy file ({e})", "corrupt") from None
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise InputError(p, f"expected (T, H, W, 3) frames, got {frames.shape}", "invalid")
    frames = np.stack([media.to_rgb_uint8(f, str(p)) for f in frames[:max_frames]])
  else:
    frames = media.read_video(p, fps=media.FPS, max_frames=max_frames)
  return frames


def _is_frames_dir(p: pathlib.Path) -> bool:
  return p.is_dir() and any(media.is_image_path(f) for f in p.iterdir())


def collect(path: PathLike) -> dict[str, pathlib.Path]:
  """Videos or frame folders under `path` by name (relative path without extension).

  A single video or frames folder is one entry named by its stem. Panels (`*_panel.mp4`) and
  hidden files are left out.

  Raises:
    InputError: nothing found.
  """
  p = pathlib.Path(path)
  if not p.exists():
    raise InputError(p, "not found", "missing")
  if p.is_file() or _is_frames_dir(p):
    return {p.stem: p}
  found = {}
  for dirpath, dirnames, filenames in os.walk(p):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    here = pathlib.Path(dirpath)
    for d in list(dirnames):
      if _is_frames_dir(here / d):
        found[(here / d).relative_to(p).as_posix()] = here / d
        dirnames.remove(d)
    for f in sorted(filenames):
      fp = here / f
      if f.startswith(".") or not (media.is_video_path(fp) or fp.suffix == ".npy"):
        continue
      if fp.stem.endswith("_panel"):
        continue
      found[fp.relative_to(p).with_suffix("").as_posix()] = fp
  if not found:
    raise InputError(p, "no videos or frame folders found", "missing")
  return found


def _is_records(p: pathlib.Path) -> bool:
  return p.is_dir() and (p / "manifest.json").exists()


def _truth_items(truth: pathlib.Path, split: str) -> Iterator[tuple[str, Any]]:
  """(name, frames or path) of the truth videos: record clips by id, else files by name."""
  if _is_records(truth):
    from pcavs_jax.data import records
    for clip in records.read_clips(truth, split):
      yield clip.clip_id, clip.frames
    return
  for name, path in collect(truth).items():
    yield name, path


def _for_name(path: pathlib.Path | None, name: str, what: str) -> pathlib.Path | None:
  """`path` itself, or the entry of a folder named like the video `name` (None: none given)."""
  if path is None or path.is_file() or _is_frames_dir(path):
    return path
  if not path.is_dir():
    raise InputError(path, f"{what} not found", "missing")
  found = [f for f in sorted(path.glob(f"{name}.*")) if not f.name.startswith(".")]
  if (path / name).is_dir():
    found.insert(0, path / name)
  if not found:
    raise InputError(path, f"no {what} named {name!r} in this folder", "missing")
  return found[0]


def reference_descriptor(path: PathLike, analyzer) -> np.ndarray:
  """(128,) dlib descriptor of the largest face of a reference photo (or a video's first frame).

  Raises:
    InputError: naming the photo, when it shows no usable face.
  """
  from pcavs_jax.data import face
  p = pathlib.Path(path)
  image = media.read_image(p) if media.is_image_path(p) else read_frames(p, 1)[0]
  al = face.clip_alignment(image[None], analyzer=analyzer, name=str(p))
  return analyzer.descriptor(image, al.track.landmarks[0])


def evaluate_paths(generated: PathLike, truth: PathLike, *, split: str = "test",
                   reference: PathLike | None = None, pose_source: PathLike | None = None,
                   detector: str = "hog", analyzer=None, max_frames: int | None = None,
                   cpbd_every: int = 1) -> dict[str, Any]:
  """Scores generated videos against ground-truth videos (see the module docstring).

  Args:
    generated, truth: see the module docstring.
    split: record split when `truth` is a record folder.
    reference: the reference photo (CSIM), or a folder of them named like the videos.
    pose_source: the pose source (pose error), or a folder of them named like the videos.
    detector: face detector ('hog' or 'cnn'), unless `analyzer` is given.
    analyzer: a `face.FaceAnalyzer` to use.
    max_frames: compare at most this many frames.
    cpbd_every: CPBD on every n-th frame.

  Returns:
    The report: 'metrics' (means over videos), 'per_video' (with per-frame values),
    'unmatched', 'notes'.

  Raises:
    InputError: unreadable inputs, a reference without a face, or no generated video has a
      truth.
  """
  from pcavs_jax.data import face
  gen_p, truth_p = pathlib.Path(generated), pathlib.Path(truth)
  ref_p = pathlib.Path(reference) if reference else None
  pose_p = pathlib.Path(pose_source) if pose_source else None
  gens = collect(gen_p)
  notes: list[str] = []
  analyzer = analyzer or face.get_analyzer(detector)
  if not analyzer.has_landmarks:
    notes.append("lmd, csim and pose errors unavailable: " + analyzer.note)
  single = len(gens) == 1 and not _is_records(truth_p) and (truth_p.is_file()
                                                            or _is_frames_dir(truth_p))
  per_video: dict[str, dict] = {}
  matched: set[str] = set()
  for name, source in _truth_items(truth_p, split):
    key = next(iter(gens)) if single else name
    if key not in gens:
      continue
    t = source if isinstance(source, np.ndarray) else read_frames(source, max_frames)
    g = read_frames(gens[key], max_frames)
    faces = {}
    if analyzer.has_landmarks:
      ref = _for_name(ref_p, key, "reference")
      pose = _for_name(pose_p, key, "pose source")
      faces = {"reference": None if ref is None else reference_descriptor(ref, analyzer),
               "pose_source": None if pose is None else read_frames(pose, max_frames)}
    per_video[key] = evaluate_pair(g, t[:max_frames], analyzer, cpbd_every=cpbd_every, **faces)
    matched.add(key)
    if single:
      break
  unmatched = sorted(set(gens) - matched)
  if not per_video:
    raise InputError(truth_p, f"no ground truth matches the generated videos "
                              f"({', '.join(sorted(gens)[:5])}...)", "missing")
  if unmatched:
    notes.append(f"{len(unmatched)} generated videos have no ground truth and were not scored")
  keys = ("ssim", "psnr", "cpbd", "cpbd_truth") + FACE_KEYS
  metrics = {k: _nanmean([v[k] for v in per_video.values()]) for k in keys}
  metrics["videos"] = len(per_video)
  metrics["frames"] = int(sum(v["frames"] for v in per_video.values()))
  return {"mode": "paired", "generated": str(gen_p), "truth": str(truth_p),
          "reference": str(ref_p) if ref_p else None,
          "pose_source": str(pose_p) if pose_p else "truth", "metrics": metrics,
          "per_video": per_video, "unmatched": unmatched, "notes": notes,
          "detector": analyzer.detector, "face_measures": analyzer.has_landmarks,
          "not_supported": NOT_SUPPORTED}


def _nanmean(values) -> float:
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


def evaluate_synthtalk(generated: PathLike, eval_set_path: PathLike, *, max_lag: int = 5,
                       cpbd_every: int = 1) -> dict[str, Any]:
  """Scores generated cross-driven videos (`<triple_id>.mp4` or frames folders) on SynthTalk.

  The exact measures come from `pcavs_jax.evaluate.scoring.score`; triples without a
  generated video are listed as missing and left out of the means. Baseline scores are read
  from `baselines.json` beside the set when it exists.

  Raises:
    InputError: unreadable inputs, or no triple has a generated video.
  """
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.evaluate import scoring
  es_path = pathlib.Path(eval_set_path)
  if not es_path.exists():
    raise InputError(es_path, "SynthTalk evaluation set not found", "missing")
  eval_set = eval_sets.load_eval_set(es_path)
  gens = collect(generated)
  present, frames, missing = [], {}, []
  for tr in eval_set.triples:
    if tr.triple_id in gens:
      frames[tr.triple_id] = read_frames(gens[tr.triple_id])
      present.append(tr)
    else:
      missing.append(tr.triple_id)
  if not present:
    raise InputError(generated, f"no generated video named like the set's triples "
                                f"({eval_set.triples[0].triple_id}.mp4, ...)", "missing")
  summary = scoring.score(frames, eval_sets.EvalSet(eval_set.resolution, present), max_lag)
  per = summary.pop("per_triple")
  for tid, f in frames.items():
    per[tid]["cpbd"] = mean_cpbd(scoring.to_uint8(f, eval_set.resolution), cpbd_every)
  summary["cpbd"] = _nanmean([p["cpbd"] for p in per.values()])
  notes = []
  if missing:
    notes.append(f"{len(missing)} of {len(eval_set)} triples have no generated video: "
                 "left out of the means")
  baselines = {}
  bl_path = es_path.parent / "baselines.json"
  if bl_path.exists():
    raw = json.loads(bl_path.read_text())
    baselines = {k: {m: v for m, v in s.items() if m != "per_triple"} for k, s in raw.items()}
    if missing:
      notes.append("baselines are scored on all triples")
  return {"mode": "synthtalk", "generated": str(generated), "eval_set": str(es_path),
          "metrics": summary, "per_video": per, "missing": missing, "baselines": baselines,
          "notes": notes, "not_supported": NOT_SUPPORTED}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


PAIRED_COLUMNS = (("ssim", "SSIM", "{:.3f}"), ("psnr", "PSNR dB", "{:.2f}"),
                  ("cpbd", "CPBD", "{:.3f}"), ("cpbd_truth", "CPBD truth", "{:.3f}"),
                  ("lmd", "LMD px", "{:.2f}"), ("csim", "CSIM", "{:.3f}"),
                  ("pose_err_yaw", "yaw err °", "{:.2f}"),
                  ("pose_err_pitch", "pitch err °", "{:.2f}"),
                  ("pose_err_roll", "roll err °", "{:.2f}"))
SYNTHTALK_COLUMNS = (("ssim", "SSIM", "{:.3f}"), ("psnr", "PSNR dB", "{:.2f}"),
                     ("mouth_err", "mouth err", "{:.3f}"), ("pose_err", "pose err", "{:.3f}"),
                     ("identity_err", "id err", "{:.3f}"), ("sync", "sync", "{:.3f}"),
                     ("abs_lag", "|lag| fr", "{:.2f}"), ("cpbd", "CPBD", "{:.3f}"))


def _cell(value, fmt: str) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "n/a"
  return fmt.format(value)


def format_table(report: Mapping[str, Any], max_rows: int = 20) -> str:
  """The report as a text table (rich): the mean row, per-video rows, baselines, then notes."""
  import io

  import rich.box
  from rich.console import Console
  from rich.table import Table
  columns = SYNTHTALK_COLUMNS if report["mode"] == "synthtalk" else PAIRED_COLUMNS
  table = Table(box=rich.box.SIMPLE_HEAD, pad_edge=False)
  table.add_column("", no_wrap=True)
  for _, head, _ in columns:
    table.add_column(head, justify="right", no_wrap=True)
  per = report.get("per_video", {})
  rows = [("generated (mean)", report["metrics"])]
  rows += [(f"  {name}", m) for name, m in list(per.items())[:max_rows]]
  rows += [(f"baseline {name}", m) for name, m in report.get("baselines", {}).items()]
  for label, m in rows:
    table.add_row(label, *(_cell(m.get(k), f) for k, _, f in columns))
  console = Console(file=io.StringIO(), width=240, color_system=None, force_terminal=False)
  console.print(table)
  lines = [line.rstrip() for line in console.file.getvalue().strip("\n").splitlines()]
  if len(per) > max_rows:
    lines.append(f"  ... {len(per) - max_rows} more videos in the JSON report")
  for note in report.get("notes", []):
    lines.append(f"note: {note}")
  for name, m in list(per.items())[:max_rows]:
    lines += [f"note: {name}: {n}" for n in m.get("notes", [])]
  for name, why in report.get("not_supported", {}).items():
    lines.append(f"{name}: {why}")
  return "\n".join(lines)


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(float(x)) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def write_report(report: Mapping[str, Any], path: PathLike) -> pathlib.Path:
  """Writes the report as JSON (NaN as null), atomically."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  tmp.write_text(json.dumps(_jsonable(report), indent=1))
  os.replace(tmp, path)
  return path


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def register(subparsers) -> argparse.ArgumentParser:
  """Adds the `evaluate` subcommand."""
  p = subparsers.add_parser(
      "evaluate", help="score generated videos: SSIM, PSNR, CPBD, LMD, CSIM, pose error; SynthTalk "
           "exact measures",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def default_report_path(generated: PathLike) -> pathlib.Path:
  g = pathlib.Path(generated)
  return g / "evaluation.json" if g.is_dir() and not _is_frames_dir(g) else (
      g.with_name(g.stem + "_evaluation.json"))


def run(args: argparse.Namespace) -> int:
  """The `evaluate` subcommand; returns the exit code (2 on bad input)."""
  try:
    if args.synthtalk:
      report = evaluate_synthtalk(args.generated, args.synthtalk, cpbd_every=args.cpbd_every)
    else:
      report = evaluate_paths(args.generated, args.truth, split=args.split,
                              reference=args.reference, pose_source=args.pose_source,
                              detector=args.detector, max_frames=args.max_frames,
                              cpbd_every=args.cpbd_every)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  path = write_report(report, args.report or default_report_path(args.generated))
  print(format_table(report))
  print(f"evaluate: report written to {path}")
  return 0
