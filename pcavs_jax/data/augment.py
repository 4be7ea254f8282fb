"""The pose source's augmentation ops on numpy frames (OpenCV): a perspective warp and a colour
jitter, each of one draw for all frames of an example. `input_pipeline.augment_pose_source` draws
their parameters with stateless TF ops and runs them inside tf.data."""
from __future__ import annotations

import cv2
import numpy as np

# ITU-R BT.601 luma weights of (R, G, B), as E_n's grayscale option reads a frame.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def perspective_matrix(height: int, width: int, shift: np.ndarray) -> np.ndarray:
  """The 3x3 map from output to input pixels of a perspective warp.

  As torchvision's RandomPerspective: the image corners (TL, TR, BR, BL) move inwards by
  `shift` (4, 2) pixels (x, y) and the image is warped so that they land there.
  """
  corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]],
                     np.float32)
  inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
  moved = corners + inward * np.asarray(shift, np.float32)
  return cv2.getPerspectiveTransform(moved, corners)


# ITU-R BT.601 luma, and RGB <-> YIQ for a hue rotation that is one linear map.
_LUMA = np.array(LUMA_WEIGHTS, np.float32)
_RGB2YIQ = np.array([LUMA_WEIGHTS, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def color_matrix(mean_rgb: np.ndarray, brightness: float, contrast: float, saturation: float,
                 hue: float) -> np.ndarray:
  """The (3, 4) affine colour map of a brightness / contrast / saturation / hue jitter.

  Factors as torchvision's ColorJitter (1 = unchanged; hue in turns), composed into one affine
  map (clipping only once, at the end), with the hue turned as a rotation of the YIQ chroma plane.

  Args:
    mean_rgb: (3,) mean colour of the images, for the contrast pivot (their mean grey).
  """
  eye, ones = np.eye(3), np.ones((3, 1))
  a = brightness * eye
  pivot = brightness * float(_LUMA @ mean_rgb)
  a, bias = contrast * a, (1 - contrast) * pivot * np.ones(3)
  sat = saturation * eye + (1 - saturation) * ones @ _LUMA[None]
  a, bias = sat @ a, sat @ bias
  if hue:
    c, s = np.cos(2 * np.pi * hue), np.sin(2 * np.pi * hue)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    turn = np.linalg.inv(_RGB2YIQ) @ rot @ _RGB2YIQ
    a, bias = turn @ a, turn @ bias
  return np.concatenate([a, bias[:, None]], axis=1).astype(np.float32)


def augment_frames(images: np.ndarray, shift: np.ndarray | None,
                   factors: np.ndarray | None) -> np.ndarray:
  """One perspective warp and one colour jitter for all of `images` (n, H, W, 3) in [0, 1].

  Args:
    images: float32 frames.
    shift: (4, 2) inward corner shifts in pixels (see `perspective_matrix`); None: no warp.
    factors: brightness, contrast, saturation, hue factors (see `color_matrix`); None: no jitter.
  """
  images = np.asarray(images, np.float32)
  n, h, w, _ = images.shape
  out = np.empty_like(images)
  if shift is not None:
    m = perspective_matrix(h, w, shift)
    for i in range(n):
      # Borders repeat the edge pixels: no black wedge to hint at the warp, and no mirrored
      # copies of facial parts (as reflection would give).
      out[i] = cv2.warpPerspective(images[i], m, (w, h),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REPLICATE)
  else:
    out[:] = images
  if factors is not None:
    m = color_matrix(out.mean(axis=(0, 1, 2)), *[float(f) for f in factors])
    for i in range(n):
      out[i] = cv2.transform(out[i], m)
    np.clip(out, 0.0, 1.0, out=out)
  return out
