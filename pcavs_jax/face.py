"""Face detection, landmarks and the official alignment, shared by preprocessing and inference.

Detection uses OpenCV's Haar cascades (they ship with opencv-python). Landmarks come from one
of two sources:
- `Landmarker`: MediaPipe's face mesh model (`face_landmark.tflite`, 468 points) reduced to a
  68-point-like layout, when the user gives the model file (it is never downloaded and never
  part of the repository; DEVELOPERS.md says where to get it). Runs with `ai-edge-litert`, or
  TensorFlow's `tf.lite` where that is missing.
- otherwise the box-based fallback: eye centres from OpenCV's eye cascade inside the face box (or
  fixed fractions of the box when the cascade misses), the mouth centre placed below the eyes.

The alignment follows the official preprocessing (DESIGN.md §5): one similarity transform per
clip, mapping the clip-mean eye centres and mouth centre to (87, 59), (137, 59), (112, 120) in a
224 x 224 crop (scaled for other sizes).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

import numpy as np

from pcavs_jax.media import InputError

# Official alignment template in 224 x 224 pixels: image-left eye, image-right eye, mouth centre.
TEMPLATE_224 = np.array([[87.0, 59.0], [137.0, 59.0], [112.0, 120.0]])
DETECT_MAX_SIDE = 640          # frames are detected at most this large (speed)
MIN_FACE_FRACTION = 0.05       # smallest face searched, as a fraction of the short side
MIN_FACE_FRACTION_VIDEO = 0.1  # talking-head videos: faces are large, and a larger minimum is fast
# Box fallback: keypoint positions as fractions of a Haar frontal-face box (x, y), measured with
# the face mesh on skimage's astronaut and made left-right symmetric.
BOX_EYE_LEFT = (0.29, 0.39)
BOX_EYE_RIGHT = (0.71, 0.39)
BOX_MOUTH = (0.50, 0.80)
MOUTH_BELOW_EYES = 1.0         # eye-midpoint-to-mouth distance / eye distance (typical adult face)
LANDMARK_MODEL_ENV = "PCAVS_LANDMARK_MODEL"
LANDMARK_MODEL_FILE = "face_landmark.tflite"

# Face-mesh vertex for each of the 68 points of the iBUG/dlib layout (jaw 0-16, brows 17-26,
# nose 27-35, eyes 36-47, mouth 48-67); an approximation, good enough for eyes and mouth.
MESH_TO_68 = np.array([
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87])


@dataclasses.dataclass(frozen=True)
class FaceBox:
  """A face box in pixels: top-left corner (x, y), width and height; score: the cascade's
  neighbour count (how many overlapping windows agreed; true faces collect tens)."""
  x: float
  y: float
  w: float
  h: float
  score: float = 0.0

  @property
  def area(self) -> float:
    return self.w * self.h

  @property
  def center(self) -> tuple[float, float]:
    return self.x + self.w / 2, self.y + self.h / 2


def _gray(image: np.ndarray) -> np.ndarray:
  import cv2
  if image.ndim == 2:
    return image
  return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)


@functools.lru_cache(maxsize=None)
def _cascade(name: str):
  import cv2
  path = os.path.join(cv2.data.haarcascades, name)
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise RuntimeError(f"OpenCV Haar cascade {path} could not be loaded")
  return cascade


def detect_faces(image: np.ndarray, min_neighbors: int = 5,
                 min_face: float = MIN_FACE_FRACTION) -> list[FaceBox]:
  """Finds frontal faces with OpenCV's Haar cascade, largest first.

  Boxes with fewer than a quarter of the best box's neighbour count are dropped: on real photos
  the cascade's false positives (clothing, background) collect a handful of neighbours where a
  face collects tens, and they can be larger than the face.

  Args:
    image: (H, W, 3) RGB or (H, W) gray uint8.
    min_neighbors: the cascade's detection threshold (higher: fewer, surer faces).
    min_face: smallest face side searched, as a fraction of the image's short side.

  Returns:
    face boxes in the image's pixel coordinates, by decreasing area (empty if none).
  """
  import cv2
  gray = _gray(image)
  h, w = gray.shape
  scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
  if scale < 1.0:
    gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
  gray = cv2.equalizeHist(gray)
  min_side = max(20, int(min_face * min(gray.shape)))
  found, neighbours = _cascade("haarcascade_frontalface_default.xml").detectMultiScale2(
      gray, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(min_side, min_side))
  found, neighbours = np.reshape(found, (-1, 4)), np.reshape(neighbours, (-1,))
  if not len(found):
    return []
  keep = neighbours >= 0.25 * neighbours.max()
  boxes = [FaceBox(*(float(v) / scale for v in b), score=float(n))
           for b, n in zip(found[keep], neighbours[keep])]
  return sorted(boxes, key=lambda b: -b.area)


def detect_face(image: np.ndarray, name: str = "image") -> FaceBox:
  """The largest face of an image.

  Raises:
    InputError: naming `name`, when no face is found.
  """
  boxes = detect_faces(image)
  if not boxes:
    raise InputError(name, "no face found", "no_face")
  return boxes[0]


def _eyes_from_cascade(gray: np.ndarray, box: FaceBox) -> np.ndarray | None:
  """Eye centres (image-left, image-right) from the eye cascade inside the box, or None."""
  x0, y0 = int(max(0, box.x)), int(max(0, box.y))
  roi = gray[y0:int(box.y + 0.6 * box.h), x0:int(box.x + box.w)]
  if roi.shape[0] < 12 or roi.shape[1] < 24:
    return None
  side = max(8, int(box.w / 8))
  found = np.reshape(_cascade("haarcascade_eye.xml").detectMultiScale(
      roi, scaleFactor=1.1, minNeighbors=3, minSize=(side, side)), (-1, 4))
  centres = found[:, :2] + found[:, 2:] / 2 + (x0, y0)
  eyes = []
  for frac in (BOX_EYE_LEFT, BOX_EYE_RIGHT):
    expected = np.array([box.x + frac[0] * box.w, box.y + frac[1] * box.h])
    near = [c for c in centres if np.linalg.norm(c - expected) < 0.2 * box.w]
    if not near:
      return None
    eyes.append(min(near, key=lambda c: np.linalg.norm(c - expected)))
  left, right = eyes
  dist = np.linalg.norm(right - left)
  if not (0.25 * box.w < dist < 0.65 * box.w) or abs(right[1] - left[1]) > 0.25 * dist:
    return None
  return np.stack([left, right]).astype(np.float64)


def box_keypoints(image: np.ndarray, box: FaceBox, use_eye_cascade: bool = True) -> np.ndarray:
  """Box-based keypoints (no landmark model): eye centres and mouth centre.

  Args:
    image: the frame the box was found in.
    box: its face box.
    use_eye_cascade: try OpenCV's eye cascade for the eyes before the fixed box fractions.

  Returns:
    (3, 2) float64 [image-left eye, image-right eye, mouth centre] in pixels.
  """
  eyes = _eyes_from_cascade(_gray(image), box) if use_eye_cascade else None
  if eyes is None:
    frac = np.array([BOX_EYE_LEFT, BOX_EYE_RIGHT, BOX_MOUTH])
    return np.array([box.x, box.y]) + frac * np.array([box.w, box.h])
  mid = eyes.mean(axis=0)
  d = eyes[1] - eyes[0]
  mouth = mid + MOUTH_BELOW_EYES * np.array([-d[1], d[0]])  # d rotated +90 degrees: downwards
  return np.concatenate([eyes, mouth[None]], axis=0)


def keypoints_from_68(landmarks: np.ndarray) -> np.ndarray:
  """Eye centres (means of points 36-41 and 42-47) and mouth centre (mean of 48-67), (3, 2)."""
  lm = np.asarray(landmarks, np.float64)
  return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[48:68].mean(0)])


# ----------------------------------------------------------------------------------------------
# Optional landmark model
# ----------------------------------------------------------------------------------------------


def _interpreter(model_path: str):
  try:
    from ai_edge_litert.interpreter import Interpreter
  except ImportError:
    try:
      import tensorflow as tf
      Interpreter = tf.lite.Interpreter
    except (ImportError, AttributeError):
      raise RuntimeError("running the landmark model needs the `ai-edge-litert` package "
                         "(pip install ai-edge-litert) or TensorFlow's tf.lite") from None
  interpreter = Interpreter(model_path=model_path, num_threads=1)
  interpreter.allocate_tensors()
  return interpreter


def find_landmark_model(path: str | os.PathLike | None = None) -> pathlib.Path | None:
  """Resolves a landmark model from a file, or a folder holding `face_landmark.tflite` anywhere
  below it (e.g. an unzipped mediapipe wheel); `None` reads $PCAVS_LANDMARK_MODEL.

  Returns:
    the model file, or None when no path is given (the box fallback is used).

  Raises:
    InputError: a path was given but holds no model.
  """
  if path is None:
    path = os.environ.get(LANDMARK_MODEL_ENV) or None
    if path is None:
      return None
  p = pathlib.Path(path)
  if p.is_file():
    return p
  if p.is_dir():
    found = sorted(p.rglob(LANDMARK_MODEL_FILE))
    if found:
      return found[0]
    raise InputError(p, f"no {LANDMARK_MODEL_FILE} below this folder", "missing")
  raise InputError(p, "landmark model not found", "missing")


class Landmarker:
  """68-point-like landmarks from MediaPipe's face mesh model (`face_landmark.tflite`).

  The face box is expanded into a square crop, the mesh is predicted, then predicted again on a
  crop re-centred on the first mesh and rotated to level the eyes (as MediaPipe tracks).
  """
  INPUT = 192

  def __init__(self, model_path: str | os.PathLike, min_presence: float = 0.5):
    self.model_path = str(model_path)
    self.min_presence = min_presence
    try:
      self._it = _interpreter(self.model_path)
    except (ValueError, RuntimeError) as e:
      if "ai-edge-litert" in str(e):
        raise
      raise InputError(self.model_path, f"not a usable tflite landmark model ({e})") from None
    inp = self._it.get_input_details()[0]
    outs = self._it.get_output_details()
    if tuple(inp["shape"]) != (1, self.INPUT, self.INPUT, 3) or outs[0]["shape"][-1] != 1404:
      raise InputError(self.model_path, "expected MediaPipe's face_landmark.tflite "
                                        f"(input 1x192x192x3, 1404 outputs), got {inp['shape']}")
    self._in = inp["index"]
    self._mesh = outs[0]["index"]
    self._score = outs[1]["index"] if len(outs) > 1 else None

  def _mesh_in_crop(self, image: np.ndarray, center: np.ndarray, side: float, angle: float
                    ) -> tuple[np.ndarray, float]:
    import cv2
    c, s = np.cos(angle), np.sin(angle)
    # Crop pixel (u, v) -> image: center + R(angle) @ ((u, v) / INPUT - 0.5) * side.
    rot = np.array([[c, -s], [s, c]]) * (side / self.INPUT)
    to_image = np.concatenate([rot, (center - rot @ np.full(2, self.INPUT / 2))[:, None]], 1)
    crop = cv2.warpAffine(image, cv2.invertAffineTransform(to_image), (self.INPUT, self.INPUT),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    self._it.set_tensor(self._in, (crop.astype(np.float32) / 255.0)[None])
    self._it.invoke()
    mesh = self._it.get_tensor(self._mesh).reshape(-1, 3)[:, :2].astype(np.float64)
    logit = float(self._it.get_tensor(self._score).ravel()[0]) if self._score is not None else 10.
    return mesh @ to_image[:, :2].T + to_image[:, 2], 1.0 / (1.0 + np.exp(-logit))

  def mesh(self, image: np.ndarray, box: FaceBox) -> np.ndarray | None:
    """The 468 mesh points (x, y) in image pixels, or None when the model sees no face."""
    image = np.ascontiguousarray(image[..., :3])
    pts, score = self._mesh_in_crop(image, np.array(box.center), 1.5 * max(box.w, box.h), 0.0)
    if score < self.min_presence:
      return None
    eye_vec = pts[263] - pts[33]
    angle = float(np.arctan2(eye_vec[1], eye_vec[0]))
    lo, hi = pts.min(0), pts.max(0)
    c, s = np.cos(-angle), np.sin(-angle)
    upright = (pts - (lo + hi) / 2) @ np.array([[c, -s], [s, c]]).T  # extent in the levelled frame
    side = 1.5 * float((upright.max(0) - upright.min(0)).max())
    pts2, score2 = self._mesh_in_crop(image, (lo + hi) / 2, side, angle)
    return pts2 if score2 >= self.min_presence else pts

  def __call__(self, image: np.ndarray, box: FaceBox) -> np.ndarray | None:
    """(68, 2) landmarks in the iBUG layout (see MESH_TO_68), or None when no face is seen."""
    mesh = self.mesh(image, box)
    return None if mesh is None else mesh[MESH_TO_68]


@functools.lru_cache(maxsize=4)
def load_landmarker(path: str | os.PathLike | None = None) -> Landmarker | None:
  """A cached `Landmarker` for `find_landmark_model(path)`, or None when there is no model."""
  model = find_landmark_model(path)
  return None if model is None else Landmarker(model)


def face_keypoints(image: np.ndarray, box: FaceBox, landmarker: Landmarker | None = None
                   ) -> tuple[np.ndarray, str]:
  """Eye centres and mouth centre of one face, from landmarks when possible.

  Returns:
    ((3, 2) keypoints, source) with source 'landmarks' or 'box'.
  """
  if landmarker is not None:
    lm = landmarker(image, box)
    if lm is not None:
      return keypoints_from_68(lm), "landmarks"
  return box_keypoints(image, box), "box"


# ----------------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------------


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


def align_frames(frames: np.ndarray, transform: np.ndarray, size: int = 224) -> np.ndarray:
  """Warps frames into aligned `size` x `size` crops with one transform.

  Where the transform shrinks by more than 2x, frames are first downscaled with an area filter,
  so that the bilinear warp does not alias. Pixels outside the frame repeat the border.

  Args:
    frames: (T, H, W, 3) or a single (H, W, 3) uint8 image.
    transform: (2, 3) source-to-crop matrix (e.g. from `alignment_transform`).
    size: output side.

  Returns:
    (T, size, size, 3) uint8 (or (size, size, 3) for a single image).
  """
  import cv2
  frames = np.asarray(frames)
  single = frames.ndim == 3
  if single:
    frames = frames[None]
  m = np.asarray(transform, np.float64)
  scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
  pre = min(1.0, 2.0 * scale)
  h, w = frames.shape[1:3]
  if pre < 1.0:
    pw, ph = max(1, round(w * pre)), max(1, round(h * pre))
    # Compose with the pre-scaling: a downscaled pixel p is the source pixel f p + (f - 1) / 2.
    f = np.array([w / pw, h / ph])
    m = np.concatenate([m[:, :2] * f, m[:, 2:] + m[:, :2] @ ((f - 1) / 2)[:, None]], axis=1)
  out = np.empty((frames.shape[0], size, size, 3), np.uint8)
  for i, frame in enumerate(frames):
    if pre < 1.0:
      frame = cv2.resize(frame, (pw, ph), interpolation=cv2.INTER_AREA)
    out[i] = cv2.warpAffine(np.ascontiguousarray(frame), m, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
  return out[0] if single else out


@dataclasses.dataclass
class ClipAlignment:
  """The per-clip alignment found by `clip_alignment`.

  Attributes:
    transform: (2, 3) source-to-crop matrix.
    keypoints: (3, 2) clip-mean eye centres and mouth centre in source pixels.
    frames_used: indices of the sampled frames where a face was found.
    frames_sampled: how many frames were examined.
    source: 'landmarks', 'box' or 'mixed' (which keypoints went into the mean).
  """
  transform: np.ndarray
  keypoints: np.ndarray
  frames_used: list[int]
  frames_sampled: int
  source: str


def clip_alignment(frames: np.ndarray, size: int = 224, landmarker: Landmarker | None = None,
                   max_samples: int = 16, min_face_fraction: float = 0.5,
                   min_face: float | None = None, name: str = "video") -> ClipAlignment:
  """One alignment for a whole clip: keypoints averaged over evenly sampled frames.

  Args:
    frames: (T, H, W, 3) uint8 RGB (a single image is a clip of one frame).
    size: output crop side.
    landmarker: optional landmark model; the box fallback otherwise.
    max_samples: frames examined (evenly spaced); detection on every frame is not needed for one
      transform per clip.
    min_face_fraction: the clip is refused when fewer sampled frames show a face.
    min_face: smallest face side searched, as a fraction of the frame's short side (default
      MIN_FACE_FRACTION_VIDEO for clips, MIN_FACE_FRACTION for a single image).
    name: the input's name, for errors.

  Raises:
    InputError: naming `name`, when too few sampled frames show a face.
  """
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  t = frames.shape[0]
  idx = np.unique(np.linspace(0, t - 1, min(t, max_samples)).round().astype(int))
  if min_face is None:
    min_face = MIN_FACE_FRACTION if t == 1 else MIN_FACE_FRACTION_VIDEO
  found = []
  for i in idx:
    boxes = detect_faces(frames[i], min_face=min_face)
    if boxes:
      found.append((int(i), boxes[0]))
  if not found or len(found) < min_face_fraction * len(idx):
    raise InputError(name, f"no face found (a face in {len(found)} of {len(idx)} sampled "
                           "frames)", "no_face")
  # One face per clip: frames whose largest face is away from the clip's typical face (the
  # medoid of the box centres; another person, a false detection) stay out of the mean.
  centres = np.array([b.center for _, b in found])
  dists = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
  medoid, width = centres[dists.sum(1).argmin()], float(np.median([b.w for _, b in found]))
  found = [f for f, c in zip(found, centres) if np.linalg.norm(c - medoid) <= 0.5 * width]
  points, used, sources = [], [], set()
  for i, box in found:
    kp, src = face_keypoints(frames[i], box, landmarker)
    points.append(kp)
    used.append(i)
    sources.add(src)
  keypoints = np.mean(points, axis=0)
  source = sources.pop() if len(sources) == 1 else "mixed"
  return ClipAlignment(alignment_transform(*keypoints, size=size), keypoints, used, len(idx),
                       source)


def align_image(image: np.ndarray, size: int = 224, landmarker: Landmarker | None = None,
                name: str = "image") -> np.ndarray:
  """Detects, aligns and crops the largest face of one image to (size, size, 3).

  Raises:
    InputError: naming `name`, when no face is found.
  """
  al = clip_alignment(image[None], size=size, landmarker=landmarker, max_samples=1, name=name)
  return align_frames(image, al.transform, size)
