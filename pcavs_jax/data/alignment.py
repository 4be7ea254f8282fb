"""The official face alignment (PC-AVS `scripts/align_68.py`) of clips and images.

The clip-mean eye centres (points 36-41, 42-47) and inner-mouth centre (60-67) give one
similarity transform onto (87, 59), (137, 59), (112, 120) of a 224 x 224 crop (scaled for other
sizes); each frame then gets its own translation b_t moving its mouth centre onto (112, 120),
smoothed as b_t = 0.2 b_(t-1) + 0.8 b_t. The faces come from `pcavs_jax.data.face.track_faces`.

Faces that fail are reported, not guessed: no face (`InputError` kind 'no_face'), a profile face
the landmarks cannot fit ('profile_face'); with several faces the largest is used, with a note.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pcavs_jax.data.face import FaceAnalyzer, FaceTrack, track_faces
from pcavs_jax.data.media import InputError

# Official alignment template in 224 x 224 pixels: image-left eye, image-right eye, mouth centre.
TEMPLATE_224 = np.array([[87.0, 59.0], [137.0, 59.0], [112.0, 120.0]])
BIAS_SMOOTHING = 0.2           # b_t = 0.2 b_(t-1) + 0.8 b_t (official)


def template(size: int = 224) -> np.ndarray:
  """The alignment template (3, 2) for a `size` x `size` crop."""
  return TEMPLATE_224 * (size / 224.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst.

  Args:
    src, dst: (N, 2) matching points, N >= 2.

  Returns:
    (2, 3) float64 matrix A with dst ~= A[:, :2] @ src + A[:, 2].
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  n = src.shape[0]
  # Unknowns (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty.
  rows = np.zeros((2 * n, 4))
  rows[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], 1)
  rows[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], 1)
  (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
  return np.array([[a, -b, tx], [b, a, ty]])


def alignment_transform(eye_left: np.ndarray, eye_right: np.ndarray, mouth: np.ndarray,
                        size: int = 224) -> np.ndarray:
  """The official alignment: a similarity taking the eyes and mouth onto the template.

  Args:
    eye_left: (2,) centre of the eye on the image's left (the subject's right eye), in pixels.
    eye_right: (2,) centre of the other eye.
    mouth: (2,) mouth centre.
    size: output crop side; the 224 template is scaled by size / 224.

  Returns:
    (2, 3) float64 matrix mapping source pixels to crop pixels (cv2.warpAffine convention).
  """
  src = np.stack([np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64),
                  np.asarray(mouth, np.float64)])
  if not np.all(np.isfinite(src)):
    raise ValueError(f"keypoints must be finite, got {src.tolist()}")
  if np.linalg.norm(src[1] - src[0]) < 1e-6:
    raise ValueError("the two eye centres coincide: no alignment is defined")
  return similarity_transform(src, template(size))


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Maps (..., 2) points through a (2, 3) affine matrix."""
  points = np.asarray(points, np.float64)
  return points @ transform[:, :2].T + transform[:, 2]


def apply_frame_transforms(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Maps (T, K, 2) points through (T, 2, 3) per-frame affine matrices."""
  transforms = np.asarray(transforms, np.float64)
  return (np.einsum("tij,tkj->tki", transforms[:, :, :2], np.asarray(points, np.float64))
          + transforms[:, None, :, 2])


def align_frames(frames: np.ndarray, transform: np.ndarray, size: int = 224) -> np.ndarray:
  """Warps frames into aligned `size` x `size` crops.

  Where the transform shrinks by more than 2x, frames are first downscaled with an area filter,
  so that the bilinear warp does not alias. Pixels outside the frame repeat the border.

  Args:
    frames: (T, H, W, 3) or a single (H, W, 3) uint8 image.
    transform: (2, 3) source-to-crop matrix for every frame, or (T, 2, 3) one per frame (e.g.
      `ClipAlignment.transforms`).
    size: output side.

  Returns:
    (T, size, size, 3) uint8 (or (size, size, 3) for a single image).
  """
  import cv2
  frames = np.asarray(frames)
  single = frames.ndim == 3
  if single:
    frames = frames[None]
  m = np.broadcast_to(np.asarray(transform, np.float64), (len(frames), 2, 3))
  scale = float(np.sqrt(abs(np.linalg.det(m[0, :, :2]))))  # the same for every frame
  pre = min(1.0, 2.0 * scale)
  h, w = frames.shape[1:3]
  if pre < 1.0:
    pw, ph = max(1, round(w * pre)), max(1, round(h * pre))
    # Compose with the pre-scaling: a downscaled pixel p is the source pixel f p + (f - 1) / 2.
    f = np.array([w / pw, h / ph])
    m = np.concatenate([m[..., :2] * f, m[..., 2:] + m[..., :2] @ ((f - 1) / 2)[:, None]], -1)
  out = np.empty((frames.shape[0], size, size, 3), np.uint8)
  for i, frame in enumerate(frames):
    if pre < 1.0:
      frame = cv2.resize(frame, (pw, ph), interpolation=cv2.INTER_AREA)
    out[i] = cv2.warpAffine(np.ascontiguousarray(frame), m[i], (size, size),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  return out[0] if single else out


def official_transforms(keypoints: np.ndarray, found: np.ndarray, size: int = 224
                        ) -> tuple[np.ndarray, np.ndarray]:
  """The official alignment of a clip from its per-frame eye and mouth centres.

  One similarity maps the clip-mean centres onto the template; frame t's translation then moves
  its own mouth centre onto the template's, as b_t = 0.2 b_(t-1) + 0.8 (template mouth - mapped
  mouth_t). Frames without a face take centres interpolated from their neighbours in time.

  Args:
    keypoints: (T, 3, 2) eye, eye and mouth centres in source pixels (NaN where not found).
    found: (T,) bool, frames whose keypoints count (at least one).
    size: output crop side.

  Returns:
    (clip transform (2, 3), per-frame transforms (T, 2, 3)).
  """
  kp = np.asarray(keypoints, np.float64)
  found = np.asarray(found, bool)
  clip = alignment_transform(*kp[found].mean(0), size=size)
  t = np.arange(len(kp))
  mouth = np.stack([np.interp(t, t[found], kp[found, 2, k]) for k in range(2)], -1)
  raw = template(size)[2] - apply_transform(clip, mouth)
  bias = raw.copy()
  for i in range(1, len(bias)):
    bias[i] = BIAS_SMOOTHING * bias[i - 1] + (1.0 - BIAS_SMOOTHING) * raw[i]
  per_frame = np.repeat(clip[None], len(kp), axis=0)
  per_frame[:, :, 2] += bias
  return clip, per_frame


@dataclasses.dataclass
class ClipAlignment:
  """The official alignment of a clip found by `clip_alignment`.

  Attributes:
    transform: (2, 3) the clip's similarity (source to crop), before the per-frame translation.
    transforms: (T, 2, 3) per-frame source-to-crop matrices (what `align_frames` applies).
    keypoints: (3, 2) clip-mean eye centres and mouth centre in source pixels.
    track: the per-frame faces.
    size: crop side.
    notes: faces left out or chosen (several faces, profiles), naming the input.
  """
  transform: np.ndarray
  transforms: np.ndarray
  keypoints: np.ndarray
  track: FaceTrack
  size: int
  notes: list[str]

  @property
  def source(self) -> str:
    return self.track.source

  @property
  def frames_used(self) -> list[int]:
    return [int(i) for i in np.flatnonzero(self.track.found)]

  def aligned_landmarks(self) -> np.ndarray:
    """(T, 68, 2) landmarks in crop pixels (NaN where not found)."""
    return apply_frame_transforms(self.transforms, self.track.landmarks)


def clip_alignment(frames: np.ndarray, size: int = 224, analyzer: FaceAnalyzer | None = None,
                   min_face_fraction: float = 0.5, min_face: float | None = None,
                   name: str = "video") -> ClipAlignment:
  """The official alignment of a clip (see `official_transforms`), from every frame's face.

  Args:
    frames: (T, H, W, 3) uint8 RGB (a single image is a clip of one frame).
    size: output crop side.
    analyzer: the face analyzer (default: `get_analyzer()`, dlib HOG).
    min_face_fraction: the clip is refused when fewer frames show a usable face.
    min_face: smallest face side searched (see `track_faces`).
    name: the input's name, for errors and notes.

  Raises:
    InputError: naming `name`: 'no_face' when too few frames show a face, 'profile_face' when
      the faces found are profiles the landmarks cannot fit.
  """
  track = track_faces(frames, analyzer, min_face)
  t, n = len(track.found), int(track.found.sum())
  if n == 0 or n < min_face_fraction * t:
    counts = track.counts
    if counts["profile"] and counts["profile"] >= counts["no_face"]:
      raise InputError(name, f"profile face: the 68 landmarks cannot fit (in {counts['profile']} "
                             f"of {t} frames)" if t > 1 else
                       "profile face: the 68 landmarks cannot fit", "profile_face")
    raise InputError(name, "no face found" + (f" (a usable face in {n} of {t} frames)"
                                              if t > 1 else ""), "no_face")
  clip, per_frame = official_transforms(track.keypoints, track.found, size)
  return ClipAlignment(clip, per_frame, track.keypoints[track.found].mean(0), track, size,
                       track.notes(name))


def align_image(image: np.ndarray, size: int = 224, analyzer: FaceAnalyzer | None = None,
                name: str = "image") -> np.ndarray:
  """Detects, aligns and crops the largest face of one image to (size, size, 3).

  Raises:
    InputError: naming `name`, when no face is found.
  """
  al = clip_alignment(np.asarray(image)[None], size=size, analyzer=analyzer, name=name)
  return align_frames(image, al.transforms[0], size)
