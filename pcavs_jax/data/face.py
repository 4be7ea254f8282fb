"""Face analysis shared by `preprocess`, `generate` and `evaluate`: detection, 68 landmarks, a
face tracked through a clip, identity descriptors and head pose.

Models (no download at run time):
- detection: dlib's HOG frontal-face detector (default), or dlib's CNN detector
  (`mmod_human_face_detector.dat`, detector='cnn': slower, finds harder faces). OpenCV's Haar
  cascade is used only when dlib is not installed; the eyes and mouth are then guessed from the
  box (`box_keypoints`) and no landmark, descriptor or pose is available.
- landmarks: dlib's `shape_predictor_68_face_landmarks.dat`, the iBUG 300-W 68-point layout (jaw
  0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67), the layout of the `face-alignment`
  package the official preprocessing uses. Its training data (iBUG 300-W) excludes commercial use.
- identity: dlib's ResNet face descriptor (`dlib_face_recognition_resnet_model_v1.dat`, 128-d).
The model files come with the `face-recognition-models` package; its folder is found without
importing the package (its `__init__` needs the removed `pkg_resources`).

The official alignment built on these is `pcavs_jax.data.alignment`.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pathlib

import numpy as np

from pcavs_jax.data.media import InputError

LEFT_EYE = slice(36, 42)       # the eye on the image's left (the subject's right eye)
RIGHT_EYE = slice(42, 48)
MOUTH = slice(48, 68)          # outer and inner lip points (LMD)
INNER_MOUTH = slice(60, 68)    # the official alignment's mouth centre

DETECTORS = ("hog", "cnn", "haar")
DEFAULT_DETECTOR = "hog"
DETECT_MAX_SIDE = 640          # frames are detected at most this large (speed)
HOG_MIN_FACE_PX = 80           # dlib's HOG window: smaller faces are not found
TRACK_FACE_PX = 120            # in a clip, frames are scaled so the last face is about this wide
MIN_FACE_FRACTION = 0.05       # smallest face searched, as a fraction of the short side
MIN_FACE_FRACTION_VIDEO = 0.1  # talking-head videos: faces are large, and a larger minimum is fast
PROFILE_RATIO = 0.25           # nose-to-jaw-side distances: the shorter under 1/4 of the longer
MIN_EYE_DISTANCE = 0.2         # eye distance under this fraction of the box side: no fit
MODEL_FILES = {"landmarks": "shape_predictor_68_face_landmarks.dat",
               "cnn": "mmod_human_face_detector.dat",
               "descriptor": "dlib_face_recognition_resnet_model_v1.dat"}
# Box fallback (no dlib): keypoint positions as fractions of a Haar frontal-face box (x, y),
# measured with landmarks on skimage's astronaut and made left-right symmetric.
BOX_EYE_LEFT = (0.29, 0.39)
BOX_EYE_RIGHT = (0.71, 0.39)
BOX_MOUTH = (0.50, 0.80)
MOUTH_BELOW_EYES = 1.0         # eye-midpoint-to-mouth distance / eye distance (typical adult face)
# Generic 3-D face for head pose (x right, y down, z away from the camera; nose tip at 0), after
# the widely used six-point model: nose tip, chin, outer eye corners, mouth corners.
POSE_POINTS = (30, 8, 36, 45, 48, 54)
POSE_MODEL_3D = np.array([[0.0, 0.0, 0.0], [0.0, 330.0, 65.0], [-225.0, -170.0, 135.0],
                          [225.0, -170.0, 135.0], [-150.0, 150.0, 125.0],
                          [150.0, 150.0, 125.0]])
POSE_FOCAL_PER_FACE = 4.0      # focal length / face size (a face ~1/4 m wide at ~1 m)


# ----------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FaceBox:
  """A face box in pixels: top-left corner (x, y), width and height; score: the detector's
  confidence (dlib's HOG or CNN score, or the Haar cascade's neighbour count)."""
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


def haar_faces(image: np.ndarray, min_face: float = MIN_FACE_FRACTION, min_neighbors: int = 5
               ) -> list[FaceBox]:
  """Finds frontal faces with OpenCV's Haar cascade, largest first (the fallback without dlib).

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
  """The official three points of (..., 68, 2) landmarks: eye centres (means of points 36-41 and
  42-47) and inner-mouth centre (mean of 60-67), (..., 3, 2)."""
  lm = np.asarray(landmarks, np.float64)
  return np.stack([lm[..., LEFT_EYE, :].mean(-2), lm[..., RIGHT_EYE, :].mean(-2),
                   lm[..., INNER_MOUTH, :].mean(-2)], axis=-2)




def models_dir() -> pathlib.Path | None:
  """The `models/` folder of the `face-recognition-models` package, or None when not installed.

  Found with `importlib.util.find_spec`, without importing the package (its `__init__` imports
  `pkg_resources`, which current setuptools no longer ships).
  """
  try:
    spec = importlib.util.find_spec("face_recognition_models")
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for location in spec.submodule_search_locations:
    folder = pathlib.Path(location) / "models"
    if folder.is_dir():
      return folder
  return None


def dlib_available() -> bool:
  """Whether dlib and the face-recognition-models files are installed."""
  return importlib.util.find_spec("dlib") is not None and models_dir() is not None


def _rgb(image: np.ndarray) -> np.ndarray:
  """A C-contiguous (H, W, 3) uint8 copy dlib accepts."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


class FaceAnalyzer:
  """Face detection, 68 landmarks and identity descriptors with dlib (Haar boxes without dlib).

  Attributes:
    detector: 'hog', 'cnn' or 'haar' (the one in use: 'haar' when dlib is absent).
    has_landmarks: whether 68 landmarks, descriptors and head pose are available.
    note: why the requested detector is not the one in use ('' when it is).
  """

  def __init__(self, detector: str = DEFAULT_DETECTOR):
    if detector not in DETECTORS:
      raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    self.note = ""
    if detector != "haar" and not dlib_available():
      self.note = (f"dlib or face-recognition-models is not installed: OpenCV's Haar cascade "
                   f"replaces the {detector} detector, eyes and mouth are guessed from the box")
      detector = "haar"
    self.detector = detector
    self.has_landmarks = detector != "haar"
    self._descriptor = None
    if not self.has_landmarks:
      return
    import dlib
    models = models_dir()
    self._shape = dlib.shape_predictor(str(models / MODEL_FILES["landmarks"]))
    if detector == "cnn":
      self._cnn = dlib.cnn_face_detection_model_v1(str(models / MODEL_FILES["cnn"]))
    else:
      self._hog = dlib.get_frontal_face_detector()

  def detect(self, image: np.ndarray, min_face: float = MIN_FACE_FRACTION,
             face_px: float | None = None) -> list[FaceBox]:
    """Faces of an image, largest first.

    Args:
      image: (H, W, 3) RGB or (H, W) gray uint8.
      min_face: smallest face side searched, as a fraction of the image's short side.
      face_px: the expected face width in pixels (a clip's previous frame): the image is scaled
        so that such a face is about TRACK_FACE_PX wide, which is faster.

    Returns:
      face boxes in the image's pixel coordinates, by decreasing area (empty if none).
    """
    import cv2
    if self.detector == "haar":
      return haar_faces(image, min_face=min_face)
    rgb = _rgb(image)
    h, w = rgb.shape[:2]
    scale = (TRACK_FACE_PX / face_px if face_px else
             HOG_MIN_FACE_PX / max(1.0, min_face * min(h, w)))
    scale = min(scale, DETECT_MAX_SIDE / max(h, w))
    if abs(scale - 1.0) > 1e-3:
      rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if self.detector == "cnn":
      found = [(d.rect, float(d.confidence)) for d in self._cnn(rgb, 0)]
    else:
      rects, scores, _ = self._hog.run(rgb, 0, 0.0)
      found = list(zip(rects, scores))
    boxes = [FaceBox(r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale,
                     score=float(s)) for r, s in found]
    return sorted(boxes, key=lambda b: -b.area)

  def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray | None:
    """(68, 2) float64 landmarks (iBUG 300-W order) of the face in `box`; None without dlib."""
    if not self.has_landmarks:
      return None
    import dlib
    rect = dlib.rectangle(round(box.x), round(box.y), round(box.x + box.w),
                          round(box.y + box.h))
    shape = self._shape(_rgb(image), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

  def descriptor(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-d identity descriptor of the face with these 68 landmarks (float64)."""
    import dlib
    if not self.has_landmarks:
      raise RuntimeError("face descriptors need dlib (pip install -r requirements.txt)")
    if self._descriptor is None:
      self._descriptor = dlib.face_recognition_model_v1(
          str(models_dir() / MODEL_FILES["descriptor"]))
    lm = np.asarray(landmarks, np.float64)
    lo, hi = lm.min(0), lm.max(0)
    shape = dlib.full_object_detection(
        dlib.rectangle(int(lo[0]), int(lo[1]), int(np.ceil(hi[0])), int(np.ceil(hi[1]))),
        [dlib.point(int(round(x)), int(round(y))) for x, y in lm])
    return np.array(self._descriptor.compute_face_descriptor(_rgb(image), shape), np.float64)


@functools.lru_cache(maxsize=None)
def get_analyzer(detector: str = DEFAULT_DETECTOR) -> FaceAnalyzer:
  """A cached `FaceAnalyzer` per detector (models load once per process)."""
  return FaceAnalyzer(detector)


def detect_faces(image: np.ndarray, min_face: float = MIN_FACE_FRACTION,
                 detector: str = DEFAULT_DETECTOR) -> list[FaceBox]:
  """Faces of an image, largest first (see `FaceAnalyzer.detect`)."""
  return get_analyzer(detector).detect(image, min_face)


def detect_face(image: np.ndarray, name: str = "image", detector: str = DEFAULT_DETECTOR
                ) -> FaceBox:
  """The largest face of an image.

  Raises:
    InputError: naming `name`, when no face is found.
  """
  boxes = detect_faces(image, detector=detector)
  if not boxes:
    raise InputError(name, "no face found", "no_face")
  return boxes[0]


def landmark_problem(landmarks: np.ndarray, box: FaceBox) -> str | None:
  """Why 68 landmarks do not describe a face they could fit (a profile), or None.

  A near-profile face puts the nose tip (30) next to one side of the jaw (0 or 16) and the two
  eye centres close together; the 68-point model, trained on near-frontal faces, then collapses.
  """
  lm = np.asarray(landmarks, np.float64)
  if not np.all(np.isfinite(lm)):
    return "landmarks not found"
  sides = np.linalg.norm(lm[[0, 16]] - lm[30], axis=-1)
  eyes = np.linalg.norm(lm[RIGHT_EYE].mean(0) - lm[LEFT_EYE].mean(0))
  if sides.min() < PROFILE_RATIO * sides.max() or eyes < MIN_EYE_DISTANCE * max(box.w, box.h):
    return "profile face: the 68 landmarks cannot fit"
  return None


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
  """Cosine similarity of two descriptors (CSIM)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def head_pose(landmarks: np.ndarray) -> np.ndarray:
  """(yaw, pitch, roll) in degrees from 68 landmarks: cv2.solvePnP on a generic 3-D face.

  The camera looks through the face's centre with a focal length of POSE_FOCAL_PER_FACE face
  sizes, so the angles do not depend on where the face sits in the frame or how large it is.
  Axes: x to the image's right, y down, z away from the camera; yaw turns about y, pitch about x,
  roll about z (positive roll turns the face clockwise as seen). A frontal face is about
  (0, 0, 0) up to the generic model's fit.

  Returns:
    (3,) float64; NaN where the landmarks are NaN or the fit fails.
  """
  import cv2
  lm = np.asarray(landmarks, np.float64)
  if not np.all(np.isfinite(lm)):
    return np.full(3, np.nan)
  lo, hi = lm.min(0), lm.max(0)
  f = POSE_FOCAL_PER_FACE * float((hi - lo).max())
  c = (lo + hi) / 2
  camera = np.array([[f, 0.0, c[0]], [0.0, f, c[1]], [0.0, 0.0, 1.0]])
  ok, rvec, _ = cv2.solvePnP(POSE_MODEL_3D, lm[list(POSE_POINTS)], camera, None,
                             flags=cv2.SOLVEPNP_ITERATIVE)
  if not ok:
    return np.full(3, np.nan)
  pitch, yaw, roll = cv2.RQDecomp3x3(cv2.Rodrigues(rvec)[0])[0]
  return np.array([yaw, pitch, roll], np.float64)


@dataclasses.dataclass
class FaceTrack:
  """One face followed through the frames of a clip (see `track_faces`).

  Attributes:
    landmarks: (T, 68, 2) source pixels; NaN where not found or without dlib.
    keypoints: (T, 3, 2) eye, eye and mouth centres (from landmarks, or the box without dlib).
    found: (T,) bool, frames with a usable face.
    boxes: the face box used per frame (None where none).
    counts: frames with 'no_face', 'several' faces, a 'profile' face, or the face 'elsewhere'
      (away from the clip's face: another person, a false detection).
    source: 'landmarks' (dlib) or 'box' (the Haar fallback).
  """
  landmarks: np.ndarray
  keypoints: np.ndarray
  found: np.ndarray
  boxes: list[FaceBox | None]
  counts: dict[str, int]
  source: str

  def notes(self, name: str) -> list[str]:
    """What the track had to leave out or choose, one line each, naming the input."""
    t, c = len(self.found), self.counts
    out = []
    if c["several"]:
      out.append(f"{name}: several faces in {c['several']} of {t} frames: the largest used")
    missing = {k: v for k, v in c.items() if k != "several" and v}
    if missing and self.found.any():
      why = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in missing.items())
      out.append(f"{name}: no usable face in {t - int(self.found.sum())} of {t} frames ({why}): "
                 "left out")
    return out


def track_faces(frames: np.ndarray, analyzer: FaceAnalyzer | None = None,
                min_face: float | None = None) -> FaceTrack:
  """The largest face of every frame, its 68 landmarks and eye and mouth centres.

  Detection in frame t is scaled to the face size of frame t - 1 (fast); where that misses, the
  whole frame is searched again. Frames whose face sits away from the clip's typical face (the
  medoid of the box centres) and profile faces the landmarks cannot fit are left out.

  Args:
    frames: (T, H, W, 3) uint8 RGB (a single image is a clip of one frame).
    analyzer: the face analyzer (default: `get_analyzer()`, dlib HOG).
    min_face: smallest face side searched, as a fraction of the frame's short side (default
      MIN_FACE_FRACTION_VIDEO for clips, MIN_FACE_FRACTION for a single image).
  """
  analyzer = analyzer or get_analyzer()
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  t = len(frames)
  if min_face is None:
    min_face = MIN_FACE_FRACTION if t == 1 else MIN_FACE_FRACTION_VIDEO
  counts = {"no_face": 0, "several": 0, "profile": 0, "elsewhere": 0}
  boxes: list[FaceBox | None] = []
  face_px = None
  for frame in frames:
    found = analyzer.detect(frame, min_face, face_px) if face_px else []
    if not found:
      found = analyzer.detect(frame, min_face)
    counts["several"] += len(found) > 1
    counts["no_face"] += not found
    boxes.append(found[0] if found else None)
    face_px = found[0].w if found else None
  present = [i for i, b in enumerate(boxes) if b is not None]
  if len(present) > 2:
    centres = np.array([boxes[i].center for i in present])
    dists = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    medoid = centres[dists.sum(1).argmin()]
    width = float(np.median([boxes[i].w for i in present]))
    for i, c in zip(present, centres):
      if np.linalg.norm(c - medoid) > 0.5 * width:
        boxes[i] = None
        counts["elsewhere"] += 1
  landmarks = np.full((t, 68, 2), np.nan)
  keypoints = np.full((t, 3, 2), np.nan)
  for i, box in enumerate(boxes):
    if box is None:
      continue
    if not analyzer.has_landmarks:
      keypoints[i] = box_keypoints(frames[i], box)
      continue
    lm = analyzer.landmarks(frames[i], box)
    if landmark_problem(lm, box):
      boxes[i] = None
      counts["profile"] += 1
      continue
    landmarks[i], keypoints[i] = lm, keypoints_from_68(lm)
  found = np.array([b is not None for b in boxes])
  return FaceTrack(landmarks, keypoints, found, boxes, counts,
                   "landmarks" if analyzer.has_landmarks else "box")
