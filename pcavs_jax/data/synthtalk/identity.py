"""SynthTalk identities: the per-speaker parameters of a procedural face and voice.

Geometry is written in "aligned units": pixels of a 224 x 224 aligned crop (DESIGN.md §5), so a
frontal face has its eye centres at (87, 59), (137, 59) and its mouth centre at (112, 120), like
real preprocessed clips. Head coordinates have their origin at the head's centre (the rotation
pivot, drawn at (112, 75) at rest), x to the viewer's right, y up and z toward the camera.

The landmark layout (eye and mouth centres, mouth shape) is the same for every identity, as
alignment makes it for real faces; identities differ in head shape, nose, eye and brow shape,
hair, and the colours of skin, lips, hair, iris and background, and in their voice.
"""
from __future__ import annotations

import numpy as np

ALIGNED_SIZE = 224.0
HEAD_CENTRE = (112.0, 75.0)        # image position of the head centre at rest (aligned units)
EYE_X = 25.0                       # eye centres at (+-25, 16) in head coordinates
EYE_Y = 16.0
MOUTH_Y = -45.0                    # mouth centre at (0, -45)

# Mouth shape (aligned units) as a function of openness o and width w, both in [0, 1]:
# the dark interior is an ellipse of half-axes (MOUTH_A0 + MOUTH_A1 * w, MOUTH_B1 * o), the lips
# an ellipse LIP_X wider and LIP_Y taller on each side.
MOUTH_A0 = 8.0
MOUTH_A1 = 12.0
MOUTH_B1 = 10.0
LIP_X = 3.5
LIP_Y = 5.5

SCLERA = np.array([240.0, 237.0, 230.0], np.float32)
PUPIL = np.array([18.0, 16.0, 18.0], np.float32)
MOUTH_INSIDE = np.array([52.0, 14.0, 20.0], np.float32)

_SKIN = np.array([[236, 200, 174], [224, 180, 148], [200, 152, 116], [168, 116, 84],
                  [128, 86, 62], [96, 64, 46]], np.float32)
_LIPS = np.array([[196, 88, 98], [172, 64, 72], [150, 72, 74], [206, 112, 122],
                  [120, 48, 56], [178, 98, 96]], np.float32)
_HAIR = np.array([[26, 22, 20], [62, 42, 30], [108, 72, 46], [146, 64, 32],
                  [204, 168, 104], [168, 162, 156], [84, 58, 40]], np.float32)
_IRIS = np.array([[92, 56, 30], [46, 32, 22], [78, 118, 168], [88, 122, 72],
                  [122, 130, 136], [132, 100, 50]], np.float32)


def chroma_residual(colour: np.ndarray, ref: np.ndarray) -> np.ndarray:
  """Distance of `colour` (..., 3) from the line of `ref` times any brightness.

  Shading scales a colour along that line, so this distance is shading-invariant.
  """
  ref = np.asarray(ref, np.float64)
  colour = np.asarray(colour, np.float64)
  beta = (colour @ ref) / (ref @ ref)
  return np.linalg.norm(colour - np.multiply.outer(beta, ref), axis=-1)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
  i = int(h * 6.0) % 6
  f = h * 6.0 - int(h * 6.0)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
  return np.array(rgb, np.float32) * 255.0


def _mix(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> np.ndarray:
  i = rng.integers(len(palette) - 1)
  colour = palette[i] + rng.uniform() * (palette[i + 1] - palette[i])
  return np.clip(colour + rng.uniform(-jitter, jitter, 3), 0.0, 255.0).astype(np.float32)


def _pick(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> np.ndarray:
  colour = palette[rng.integers(len(palette))] + rng.uniform(-jitter, jitter, 3)
  return np.clip(colour, 0.0, 255.0).astype(np.float32)


def _separation(colour: np.ndarray, other: np.ndarray, min_dist: float,
                min_chroma: float) -> float:
  """How far `colour` clears `other`: >= 0 when at least `min_dist` away and either a different
  chroma (`min_chroma` off the line of `other`'s shades) or a much darker or lighter shade."""
  beta = float(colour @ other / (other @ other))
  shade = 100.0 * max(0.4 - beta, beta - 1.7)
  return min(float(np.linalg.norm(colour - other)) - min_dist,
             max(float(chroma_residual(colour, other)) - min_chroma, shade))


def _distinct(rng: np.random.Generator, draw, others: list[np.ndarray], min_dist: float,
              min_chroma: float) -> np.ndarray:
  """Draws colours until one is separated from every colour in `others` (the best of 200)."""
  best, best_margin = None, -np.inf
  for _ in range(200):
    c = draw()
    margin = min(_separation(c, o, min_dist, min_chroma) for o in others)
    if margin >= 0:
      return c
    if margin > best_margin:
      best, best_margin = c, margin
  return best


def sample_identity(rng: np.random.Generator, index: int) -> dict[str, np.ndarray]:
  """Draws one identity's face and voice parameters.

  Args:
    rng: the identity's own random stream.
    index: the identity's index (stored, and used as its label).

  Returns:
    name -> float32 array (the `Clip.identity_params` of its clips).
  """
  u = rng.uniform
  skin = _mix(rng, _SKIN, 6.0)
  lips = _distinct(rng, lambda: 0.55 * _pick(rng, _LIPS, 10.0) + 0.45 * skin * np.array(
      [1.0, 0.7, 0.75], np.float32), [skin, MOUTH_INSIDE], 45.0, 25.0)
  hair = _distinct(rng, lambda: _pick(rng, _HAIR, 10.0), [skin], 60.0, 35.0)
  iris = _pick(rng, _IRIS, 8.0)
  background = _distinct(
      rng, lambda: _hsv_to_rgb(u(), u(0.15, 0.65), u(0.35, 0.92)), [skin, hair], 70.0, 40.0)
  background2 = np.clip(background * u(0.8, 1.12) + u(-12, 12, 3), 0, 255).astype(np.float32)
  # Heads differ in width only: one height and depth keep the outline's vertical extent and
  # the mouth's slant common to all, which the analyzer relies on.
  ax, ay, az = u(55.0, 67.0), 89.0, 74.0
  female = u() < 0.5
  params = {
      "index": np.array([index], np.float32),
      "skin": skin, "lips": lips, "hair": hair, "iris": iris,
      "background": background, "background2": background2,
      "head_axes": np.array([ax, ay, az], np.float32),
      # eye half-width, half-height, iris radius as a fraction of the half-height
      "eye": np.array([u(11.0, 13.5), u(5.5, 7.0), u(0.8, 0.92)], np.float32),
      # brow gap above the eye, thickness, half-length, arch, darkness
      "brow": np.array([u(6.0, 9.0), u(2.5, 3.8), u(11.0, 15.0), u(0.015, 0.04),
                        u(0.65, 0.85)], np.float32),
      # nose centre height, half-width, half-height, protrusion beyond the face surface
      "nose": np.array([u(-10.0, -7.0), u(7.0, 10.0), u(13.0, 16.0), u(8.0, 14.0)], np.float32),
      # hair shell scale, shell lift, hairline height at the front, hairline slope toward the back
      "hair_style": np.array([u(1.04, 1.12), u(2.0, 9.0), u(56.0, 68.0), u(0.15, 0.45)],
                             np.float32),
      "f0": np.array([u(170.0, 250.0) if female else u(90.0, 150.0)], np.float32),
      "jitter": np.array([u(0.005, 0.02)], np.float32),
      "formant_scale": np.array([u(1.05, 1.18) if female else u(0.92, 1.04)], np.float32),
  }
  return params
