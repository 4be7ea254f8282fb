"""Faces: dlib detection and 68 landmarks on real photos, the official alignment on a head-moving
video, identity descriptors (CSIM), head pose, failures, and the Haar fallback.

The photos of two people come from the sdist of face_recognition 1.3.0 (tests/test_images),
fetched into .cache/test_faces by scripts/fetch_test_faces.sh (scripts/test.sh runs it); the
tests that need them skip where they are absent.
"""
import pathlib

import cv2
import numpy as np
import pytest
from skimage import data

from pcavs_jax.data import alignment, face
from pcavs_jax.data.media import InputError, read_image

FACES = pathlib.Path(__file__).resolve().parents[2] / ".cache" / "test_faces"
# Eye centres (36-41, 42-47) and inner-mouth centre (60-67) of skimage's astronaut (dlib).
ASTRONAUT_EYES = np.array([[203.2, 101.5], [246.8, 104.0]])
ASTRONAUT_MOUTH = np.array([223.1, 145.4])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
  return data.astronaut()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
  names = ("obama", "obama2", "obama3", "biden")
  if not all((FACES / f"{n}.jpg").exists() for n in names):
    pytest.skip(f"face photos not found in {FACES} (run scripts/fetch_test_faces.sh once, "
                "with the network)")
  return {n: read_image(FACES / f"{n}.jpg", max_side=640) for n in names}


def _random_similarity(rng) -> np.ndarray:
  angle, scale = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 3.0)
  c, s = scale * np.cos(angle), scale * np.sin(angle)
  return np.array([[c, -s, rng.uniform(-50, 50)], [s, c, rng.uniform(-50, 50)]])


@pytest.mark.parametrize("size", [224, 112, 256])
def test_alignment_maps_keypoints_to_template(size):
  rng = np.random.default_rng(size)
  for _ in range(5):
    m = _random_similarity(rng)
    src = alignment.apply_transform(m, alignment.TEMPLATE_224)  # keypoints of a face somewhere in a frame
    t = alignment.alignment_transform(src[0], src[1], src[2], size=size)
    np.testing.assert_allclose(alignment.apply_transform(t, src), alignment.TEMPLATE_224 * size / 224,
                               atol=1e-9)
  np.testing.assert_allclose(alignment.template(224), [[87, 59], [137, 59], [112, 120]])


def test_similarity_is_least_squares():
  """Against an independent closed form: complex least squares z' = a z + b."""
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 200, (3, 2))
  dst = alignment.template(224)
  m = alignment.similarity_transform(src, dst)
  z, w = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
  (a, b), *_ = np.linalg.lstsq(np.stack([z, np.ones(3)], 1), w, rcond=None)
  np.testing.assert_allclose(m, [[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]],
                             atol=1e-9)


def test_alignment_rejects_degenerate_keypoints():
  with pytest.raises(ValueError, match="coincide"):
    alignment.alignment_transform([10, 10], [10, 10], [10, 30])
  with pytest.raises(ValueError, match="finite"):
    alignment.alignment_transform([np.nan, 10], [20, 10], [10, 30])


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
  pts = alignment.apply_transform(m, alignment.TEMPLATE_224)
  shape = (int(pts[:, 1].max() + 60), int(pts[:, 0].max() + 60))
  frame = _dots_image(pts, shape, radius=int(4 * scale))
  t = alignment.alignment_transform(*pts, size=size)
  out = alignment.align_frames(np.stack([frame, frame]), t, size)
  assert out.shape == (2, size, size, 3) and out.dtype == np.uint8
  for k in range(3):
    np.testing.assert_allclose(_centroid(out[1], k), alignment.template(size)[k], atol=0.35)
  np.testing.assert_array_equal(alignment.align_frames(frame, t, size), out[0])


def test_models_are_installed():
  assert face.dlib_available()
  for name in face.MODEL_FILES.values():
    assert (face.models_dir() / name).is_file()


def test_detect_face_astronaut(astronaut):
  box = face.detect_face(astronaut)
  cx, cy = box.center
  assert abs(cx - 225) < 12 and abs(cy - 120) < 15 and 80 < box.w < 130
  assert face.detect_faces(astronaut)[0] == box
  # Detection runs on a downscaled copy of large images; the box comes back in full pixels.
  big_box = face.detect_face(cv2.resize(astronaut, (2048, 2048)))
  assert abs(big_box.center[0] / 4 - cx) < 8 and abs(big_box.w / 4 - box.w) < 15


def test_landmarks_astronaut(astronaut):
  analyzer = face.get_analyzer()
  lm = analyzer.landmarks(astronaut, face.detect_face(astronaut))
  assert lm.shape == (68, 2)
  kp = face.keypoints_from_68(lm)
  np.testing.assert_allclose(kp[:2], ASTRONAUT_EYES, atol=1.5)
  np.testing.assert_allclose(kp[2], ASTRONAUT_MOUTH, atol=1.5)
  # iBUG order: jaw left to right, chin (8) lowest of the jaw, mouth corners 48/54 outside 62.
  assert lm[0, 0] < lm[8, 0] < lm[16, 0] and lm[8, 1] > lm[[0, 16], 1].max()
  assert lm[48, 0] < lm[62, 0] < lm[54, 0]
  assert face.landmark_problem(lm, face.detect_face(astronaut)) is None


def test_no_face_is_an_input_error():
  noise = np.random.default_rng(0).integers(100, 140, (200, 200, 3), dtype=np.uint8)
  with pytest.raises(InputError, match="flat.png: no face found") as e:
    face.detect_face(noise, name="flat.png")
  assert e.value.kind == "no_face"
  with pytest.raises(InputError, match=r"clip.mp4: no face found \(a usable face in 0 of 4"):
    alignment.clip_alignment(np.stack([noise] * 4), name="clip.mp4")
  with pytest.raises(InputError, match="black.png: no face found$"):
    alignment.align_image(np.zeros((100, 100, 3), np.uint8), name="black.png")


def test_official_transforms_smoothing_and_gaps():
  """Against an independent loop: one similarity from the clip mean, then the mouth bias."""
  rng = np.random.default_rng(1)
  base = alignment.apply_transform(np.array([[1.3, 0.1, 40], [-0.1, 1.3, 30]]), alignment.TEMPLATE_224)
  kp = base + rng.normal(0, 3, (6, 3, 2))
  found = np.array([True, True, False, True, True, True])
  clip, per = alignment.official_transforms(kp, found, 224)
  np.testing.assert_allclose(clip, alignment.similarity_transform(kp[found].mean(0), alignment.TEMPLATE_224))
  kp[2] = (kp[1] + kp[3]) / 2                        # a frame without a face: interpolated
  b_prev = None
  for t in range(6):
    b = np.array([112.0, 120.0]) - alignment.apply_transform(clip, kp[t, 2])
    b = b if b_prev is None else 0.2 * b_prev + 0.8 * b
    np.testing.assert_allclose(per[t, :, 2], clip[:, 2] + b, atol=1e-9)
    np.testing.assert_allclose(per[t, :, :2], clip[:, :2])
    b_prev = b


def _moving(image: np.ndarray, frames: int = 20) -> np.ndarray:
  """A head-moving video: the photo under a known, smooth similarity per frame."""
  out = []
  for t in range(frames):
    m = cv2.getRotationMatrix2D((225.0, 125.0), 8 * np.sin(2 * np.pi * t / frames),
                                1 + 0.1 * np.sin(2 * np.pi * t / 13))
    m[:, 2] += (np.array([160.0, 140.0]) - (225, 125)
                + (15 * np.sin(2 * np.pi * t / frames), 10 * np.cos(2 * np.pi * t / frames)))
    out.append(cv2.warpAffine(image, m, (320, 320), borderMode=cv2.BORDER_REFLECT))
  return np.stack(out)


def _stretched(image: np.ndarray) -> np.ndarray:
  """The photo stretched vertically to the template's eye-to-mouth / eye-distance ratio."""
  kp = face.keypoints_from_68(face.get_analyzer().landmarks(image, face.detect_face(image)))
  ratio = (kp[2, 1] - kp[:2, 1].mean()) / (kp[1, 0] - kp[0, 0])
  stretch = (120 - 59) / (137 - 87) / ratio
  return cv2.resize(image, (image.shape[1], round(image.shape[0] * stretch)),
                    interpolation=cv2.INTER_CUBIC)


def _found_again(aligned: np.ndarray) -> np.ndarray:
  track = face.track_faces(aligned)
  assert track.found.all()
  return track.keypoints


def test_official_alignment_on_a_head_moving_video(astronaut):
  """Landmarks found again on the aligned frames: clip-mean eyes on the template within 1.5 px,
  every frame's mouth centre within 2 px of (112, 120)."""
  frames = _moving(_stretched(astronaut), 30)
  al = alignment.clip_alignment(frames, name="moving.mp4")
  assert al.source == "landmarks" and al.frames_used == list(range(30)) and not al.notes
  kp = _found_again(alignment.align_frames(frames, al.transforms, 224))
  assert np.linalg.norm(kp[:, :2].mean(0) - alignment.TEMPLATE_224[:2], axis=-1).max() < 1.5
  assert np.linalg.norm(kp[:, 2] - alignment.TEMPLATE_224[2], axis=-1).max() < 2.0
  # The stored landmarks are those of the aligned frames.
  np.testing.assert_allclose(face.keypoints_from_68(al.aligned_landmarks()), kp, atol=2.0)
  # At another size the template scales.
  kp128 = _found_again(alignment.align_frames(frames[:4], al.transforms[:4] * [[128 / 224]], 128))
  assert np.linalg.norm(kp128[:, 2] - alignment.template(128)[2], axis=-1).max() < 2.0


def test_official_alignment_keeps_the_face_proportions(astronaut):
  """A face whose proportions differ from the template: the least-squares similarity cannot put
  all three points on it; the mouth is pinned and the eyes carry the residual (as officially)."""
  frames = _moving(astronaut, 30)
  al = alignment.clip_alignment(frames)
  kp = _found_again(alignment.align_frames(frames, al.transforms, 224))
  assert np.linalg.norm(kp[:, 2] - alignment.TEMPLATE_224[2], axis=-1).max() < 2.0
  photo = np.vstack([ASTRONAUT_EYES, ASTRONAUT_MOUTH])
  fit = alignment.similarity_transform(photo, alignment.TEMPLATE_224)
  expected = alignment.apply_transform(fit, photo)
  expected += alignment.TEMPLATE_224[2] - expected[2]     # the mouth translation
  np.testing.assert_allclose(kp[:, :2].mean(0), expected[:2], atol=1.5)


def test_several_faces_use_the_largest_with_a_note(astronaut):
  small = cv2.resize(astronaut, (256, 256))
  canvas = np.zeros((512, 800, 3), np.uint8)
  canvas[:, :512] = astronaut
  canvas[100:356, 540:796] = small
  al = alignment.clip_alignment(np.stack([canvas] * 3), name="two.mp4")
  assert al.track.counts["several"] == 3
  assert al.notes == ["two.mp4: several faces in 3 of 3 frames: the largest used"]
  np.testing.assert_allclose(al.keypoints[:2], ASTRONAUT_EYES, atol=1.5)


def test_profile_face_is_reported(astronaut, monkeypatch):
  analyzer = face.FaceAnalyzer()
  box = face.detect_face(astronaut)
  lm = analyzer.landmarks(astronaut, box)
  profile = lm.copy()
  profile[:, 0] = lm[0, 0] + 0.15 * (lm[:, 0] - lm[0, 0])   # the face turned away: x collapses
  profile[0, 0] -= 40
  assert face.landmark_problem(profile, box) == "profile face: the 68 landmarks cannot fit"
  monkeypatch.setattr(analyzer, "landmarks", lambda image, box: profile)
  with pytest.raises(InputError, match="side.png: profile face: the 68 landmarks cannot fit") as e:
    alignment.clip_alignment(astronaut[None], analyzer=analyzer, name="side.png")
  assert e.value.kind == "profile_face"


def test_csim_same_person_beats_different_people(photos, astronaut):
  analyzer = face.get_analyzer()
  desc = {}
  for name, image in {**photos, "astronaut": astronaut}.items():
    al = alignment.clip_alignment(image[None], analyzer=analyzer, name=name)
    desc[name] = analyzer.descriptor(image, al.track.landmarks[0])
  same = [face.cosine_similarity(desc[a], desc[b])
          for a, b in (("obama", "obama2"), ("obama", "obama3"), ("obama2", "obama3"))]
  people = ("obama", "biden", "astronaut")
  different = [face.cosine_similarity(desc[a], desc[b])
               for i, a in enumerate(people) for b in people[i + 1:]]
  assert min(same) > 0.9 and min(same) > max(different) + 0.05, (same, different)


@pytest.mark.parametrize("angle", [-15.0, 12.0])
def test_head_pose_recovers_in_plane_roll(astronaut, angle):
  analyzer = face.get_analyzer()

  def pose(image):
    return face.head_pose(analyzer.landmarks(image, face.detect_face(image)))

  upright = pose(astronaut)
  m = cv2.getRotationMatrix2D((225.0, 125.0), angle, 1.0)   # counter-clockwise as seen
  turned = pose(cv2.warpAffine(astronaut, m, (512, 512), borderMode=cv2.BORDER_REFLECT))
  assert abs((turned[2] - upright[2]) + angle) < 3.0       # roll is clockwise-positive
  assert np.all(np.abs(turned[:2] - upright[:2]) < 3.0)
  assert np.all(np.isnan(face.head_pose(np.full((68, 2), np.nan))))


def test_haar_fallback_without_dlib(astronaut, monkeypatch):
  monkeypatch.setattr(face, "dlib_available", lambda: False)
  analyzer = face.FaceAnalyzer("hog")
  assert analyzer.detector == "haar" and not analyzer.has_landmarks and "Haar" in analyzer.note
  al = alignment.clip_alignment(astronaut[None], analyzer=analyzer)
  assert al.source == "box" and np.isnan(al.aligned_landmarks()).all()
  np.testing.assert_allclose(al.keypoints[:2], ASTRONAUT_EYES, atol=6)


@pytest.mark.parametrize("use_eye_cascade", [True, False])
def test_box_keypoints_astronaut(astronaut, use_eye_cascade):
  box = face.haar_faces(astronaut)[0]
  kp = face.box_keypoints(astronaut, box, use_eye_cascade=use_eye_cascade)
  np.testing.assert_allclose(kp[:2], ASTRONAUT_EYES, atol=6)
  np.testing.assert_allclose(kp[2], ASTRONAUT_MOUTH, atol=8)


def test_bad_detector_name():
  with pytest.raises(ValueError, match="detector must be one of hog, cnn, haar"):
    face.FaceAnalyzer("mediapipe")
