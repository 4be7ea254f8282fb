"""Face detection on a real photo, the official alignment, and the optional landmark model.

The landmark-model tests run only where $PCAVS_LANDMARK_MODEL points at MediaPipe's
face_landmark.tflite (or a folder holding it); the model is never downloaded or committed.
"""
import os

import numpy as np
import pytest
from skimage import data

from pcavs_jax import face
from pcavs_jax.media import InputError

# Eye and mouth centres of skimage's astronaut, from the face mesh model (pixels).
ASTRONAUT_EYES = np.array([[203.5, 101.5], [247.0, 104.0]])
ASTRONAUT_MOUTH = np.array([223.0, 145.0])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
  return data.astronaut()


def _random_similarity(rng) -> np.ndarray:
  angle, scale = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 3.0)
  c, s = scale * np.cos(angle), scale * np.sin(angle)
  return np.array([[c, -s, rng.uniform(-50, 50)], [s, c, rng.uniform(-50, 50)]])


@pytest.mark.parametrize("size", [224, 112, 256])
def test_alignment_maps_keypoints_to_template(size):
  rng = np.random.default_rng(size)
  for _ in range(5):
    m = _random_similarity(rng)
    src = face.apply_transform(m, face.TEMPLATE_224)  # keypoints of a face somewhere in a frame
    t = face.alignment_transform(src[0], src[1], src[2], size=size)
    np.testing.assert_allclose(face.apply_transform(t, src), face.TEMPLATE_224 * size / 224,
                               atol=1e-9)
  np.testing.assert_allclose(face.template(224), [[87, 59], [137, 59], [112, 120]])


def test_similarity_is_least_squares():
  """Against an independent closed form: complex least squares z' = a z + b."""
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 200, (3, 2))
  dst = face.template(224)
  m = face.similarity_transform(src, dst)
  z, w = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
  (a, b), *_ = np.linalg.lstsq(np.stack([z, np.ones(3)], 1), w, rcond=None)
  np.testing.assert_allclose(m, [[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]],
                             atol=1e-9)


def test_alignment_rejects_degenerate_keypoints():
  with pytest.raises(ValueError, match="coincide"):
    face.alignment_transform([10, 10], [10, 10], [10, 30])
  with pytest.raises(ValueError, match="finite"):
    face.alignment_transform([np.nan, 10], [20, 10], [10, 30])


def _dots_image(points: np.ndarray, shape: tuple[int, int], radius: int) -> np.ndarray:
  """A gray image with a red, a green and a blue disc centred on the three points."""
  import cv2
  img = np.full(shape + (3,), 40, np.uint8)
  for p, colour in zip(points, [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
    cv2.circle(img, tuple(int(round(v * 16)) for v in p), radius * 16, colour, -1,
               lineType=cv2.LINE_AA, shift=4)
  return img


def _centroid(img: np.ndarray, channel: int) -> np.ndarray:
  others = [c for c in range(3) if c != channel]
  mask = (img[..., channel].astype(int) - img[..., others].max(-1)).clip(0).astype(float)
  ys, xs = np.mgrid[:img.shape[0], :img.shape[1]]
  return np.array([(xs * mask).sum(), (ys * mask).sum()]) / mask.sum()


@pytest.mark.parametrize("scale,size", [(1.7, 224), (0.6, 224), (6.0, 128)])
def test_align_frames_puts_points_on_template(scale, size):
  """Dots at known keypoints of a rotated, scaled 'face' land on the template after warping.

  Scale 6 exercises the area pre-downscaling of strong reductions."""
  angle = 0.3
  c, s = scale * np.cos(angle), scale * np.sin(angle)
  m = np.array([[c, -s, 30.0], [s, c, 20.0]])
  pts = face.apply_transform(m, face.TEMPLATE_224)
  shape = (int(pts[:, 1].max() + 60), int(pts[:, 0].max() + 60))
  frame = _dots_image(pts, shape, radius=int(4 * scale))
  t = face.alignment_transform(*pts, size=size)
  out = face.align_frames(np.stack([frame, frame]), t, size)
  assert out.shape == (2, size, size, 3) and out.dtype == np.uint8
  for k in range(3):
    np.testing.assert_allclose(_centroid(out[1], k), face.template(size)[k], atol=0.35)
  np.testing.assert_array_equal(face.align_frames(frame, t, size), out[0])


def test_detect_face_astronaut(astronaut):
  box = face.detect_face(astronaut)
  cx, cy = box.center
  assert abs(cx - 225) < 12 and abs(cy - 120) < 15 and 80 < box.w < 130
  assert face.detect_faces(astronaut)[0] == box
  # Detection runs on a downscaled copy of large images; the box comes back in full pixels.
  import cv2
  big = cv2.resize(astronaut, (2048, 2048))
  big_box = face.detect_face(big)
  assert abs(big_box.center[0] / 4 - cx) < 8 and abs(big_box.w / 4 - box.w) < 15


def test_no_face_is_an_input_error():
  noise = np.random.default_rng(0).integers(100, 140, (200, 200, 3), dtype=np.uint8)
  with pytest.raises(InputError, match="flat.png: no face found") as e:
    face.detect_face(noise, name="flat.png")
  assert e.value.kind == "no_face"
  with pytest.raises(InputError, match="clip.mp4: no face found"):
    face.clip_alignment(np.stack([noise] * 4), name="clip.mp4")


@pytest.mark.parametrize("use_eye_cascade", [True, False])
def test_box_keypoints_astronaut(astronaut, use_eye_cascade):
  box = face.detect_face(astronaut)
  kp = face.box_keypoints(astronaut, box, use_eye_cascade=use_eye_cascade)
  np.testing.assert_allclose(kp[:2], ASTRONAUT_EYES, atol=6)
  np.testing.assert_allclose(kp[2], ASTRONAUT_MOUTH, atol=8)


def test_clip_alignment_and_align_image(astronaut):
  shifted = np.stack([np.roll(astronaut, (dy, dx), (0, 1))
                      for dy, dx in [(0, 0), (4, -6), (-3, 5)]])
  al = face.clip_alignment(shifted)
  assert al.source == "box" and al.frames_used == [0, 1, 2]
  # The clip mean of keypoints that moved by (0,0), (-6,4), (5,-3): about +(-0.3, 0.3).
  aligned = face.apply_transform(al.transform, np.vstack([ASTRONAUT_EYES, ASTRONAUT_MOUTH]))
  assert np.abs(aligned - face.template(224)).max() < 8
  # A frame whose face sits elsewhere (another shot, a false detection) stays out of the mean.
  moved = np.concatenate([shifted, np.roll(astronaut, (0, 200), (0, 1))[None]])
  assert face.clip_alignment(moved).frames_used == [0, 1, 2]
  crop = face.align_image(astronaut, size=64)
  assert crop.shape == (64, 64, 3)
  with pytest.raises(InputError, match="no face"):
    face.align_image(np.zeros((100, 100, 3), np.uint8), name="black.png")


def test_landmark_model_errors(tmp_path):
  with pytest.raises(InputError, match="landmark model not found"):
    face.find_landmark_model(tmp_path / "none.tflite")
  with pytest.raises(InputError, match="no face_landmark.tflite below"):
    face.find_landmark_model(tmp_path)
  (tmp_path / "face_landmark.tflite").write_bytes(b"not a model")
  assert face.find_landmark_model(tmp_path) == tmp_path / "face_landmark.tflite"
  with pytest.raises((InputError, RuntimeError), match="face_landmark.tflite"):
    face.Landmarker(tmp_path / "face_landmark.tflite")


@pytest.fixture(scope="module")
def landmarker():
  path = os.environ.get(face.LANDMARK_MODEL_ENV)
  if not path:
    pytest.skip(f"${face.LANDMARK_MODEL_ENV} not set: no landmark model to test")
  return face.load_landmarker(path)


def test_landmarks_astronaut(landmarker, astronaut):
  box = face.detect_face(astronaut)
  lm = landmarker(astronaut, box)
  assert lm.shape == (68, 2)
  kp = face.keypoints_from_68(lm)
  np.testing.assert_allclose(kp[:2], ASTRONAUT_EYES, atol=2.5)
  np.testing.assert_allclose(kp[2], ASTRONAUT_MOUTH, atol=2.5)
  # iBUG order: jaw left to right, chin (8) lowest of the jaw, mouth corners 48/54 outside 62.
  assert lm[0, 0] < lm[8, 0] < lm[16, 0] and lm[8, 1] > lm[[0, 16], 1].max()
  assert lm[48, 0] < lm[62, 0] < lm[54, 0]
  al = face.clip_alignment(astronaut[None], landmarker=landmarker)
  assert al.source == "landmarks"
  # A rotated photo: the mesh follows the face.
  import cv2
  rot = cv2.getRotationMatrix2D((225.0, 120.0), 20, 1.0)
  turned = cv2.warpAffine(astronaut, rot, (512, 512))
  lm2 = landmarker(turned, box)
  np.testing.assert_allclose(face.keypoints_from_68(lm2), face.apply_transform(rot, kp), atol=4)
  assert landmarker(np.full_like(astronaut, 128), box) is None
