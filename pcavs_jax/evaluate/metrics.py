"""Per-frame measures of generated video: SSIM, PSNR, CPBD, LMD, CSIM and head-pose error.

The project's one SSIM and one PSNR (`ssim`, `psnr`): the mean over frames of each frame's value,
the usual video-metric convention; both the paired evaluation (`videos`) and SynthTalk's scoring
(`scoring`) report these.
"""
from __future__ import annotations

import math

import numpy as np

from pcavs_jax.data.face import MOUTH   # mouth points of the 68-point layout

# CPBD constants (Narvekar & Karam 2011).
CPBD_BLOCK = 64               # blocks of 64 x 64 pixels
CPBD_EDGE_BLOCK = 0.002       # an edge block holds more than 0.2 % edge pixels
CPBD_BETA = 3.6               # slope of the probability-of-blur-detection curve
CPBD_P_JNB = 0.63             # the probability of detecting blur at the JNB width
CPBD_JNB_WIDTHS = (5.0, 3.0)  # JNB edge width for block contrast <= 50, > 50
CPBD_LOW_CONTRAST = 50
CPBD_MAX_STEPS = 100          # an edge extends at most this many pixels on each side
PSNR_CAP = 100.0


def nanmean(values) -> float:
  """Mean of the finite values (NaN when there is none)."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


# ---------------------------------------------------------------------------------- SSIM, PSNR


def ssim_per_frame(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """(T,) SSIM of two (T, H, W, 3) uint8 videos (skimage, RGB, data range 255)."""
  from skimage import metrics
  return np.array([metrics.structural_similarity(g, t, channel_axis=-1, data_range=255)
                   for g, t in zip(generated, truth)], np.float64)


def ssim(generated: np.ndarray, truth: np.ndarray) -> float:
  """SSIM of two (T, H, W, 3) uint8 videos: the mean over frames of each frame's SSIM
  (skimage's structural similarity, RGB channels, data range 255); 1 for identical videos."""
  return float(ssim_per_frame(generated, truth).mean())


def psnr_per_frame(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """(T,) PSNR (dB) of two uint8 videos, each capped at 100 dB (identical frames: 100 dB)."""
  from skimage import metrics
  return np.array([PSNR_CAP if np.array_equal(g, t) else
                   min(PSNR_CAP, metrics.peak_signal_noise_ratio(t, g, data_range=255))
                   for g, t in zip(generated, truth)], np.float64)


def psnr(generated: np.ndarray, truth: np.ndarray) -> float:
  """PSNR of two uint8 videos in dB: the mean over frames of each frame's
  10 log10(255^2 / MSE), each frame capped at 100 dB (identical frames score 100)."""
  return float(psnr_per_frame(generated, truth).mean())


# ---------------------------------------------------------------------------------------- CPBD


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
  widths = edge_widths(gray, _sobel_vertical_edges(gray))
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
  return nanmean([cpbd(f) for f in frames[::max(1, every)]])


# ------------------------------------------------- face measures (dlib's 68 points, `data.face`)


def aligned_landmarks(track, size: int = 224) -> np.ndarray:
  """(T, 68, 2) landmarks of a `face.FaceTrack` in the clip's official alignment at `size` px
  (NaN where no usable face; all NaN when the clip shows none)."""
  from pcavs_jax.data import alignment
  if not track.found.any():
    return np.full(track.landmarks.shape, np.nan)
  _, transforms = alignment.official_transforms(track.keypoints, track.found, size)
  return alignment.apply_frame_transforms(transforms, track.landmarks)


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
