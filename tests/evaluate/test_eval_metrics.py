"""The per-frame measures: CPBD from its definition, the one SSIM and PSNR, LMD and pose error."""
import math

import numpy as np
import pytest
from skimage import data, filters

from pcavs_jax.evaluate import metrics as ev


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
  if sigma == 0:
    return img
  return filters.gaussian(img, sigma=sigma, channel_axis=-1, preserve_range=True).round(
      ).astype(np.uint8)


# ----------------------------------------------------------------------------------------- CPBD


def test_edge_width_of_a_linear_ramp_is_its_length():
  g = np.zeros((5, 40))
  g[:, 10:21] = np.linspace(0, 255, 11)   # rises over 10 pixel steps
  g[:, 21:] = 255
  edges = np.zeros_like(g, bool)
  edges[2, 15] = True
  assert ev.edge_widths(g, edges)[2, 15] == 10
  falling = 255 - g                          # a 180-degree edge measures the same
  assert ev.edge_widths(falling, edges)[2, 15] == 10


def test_cpbd_sharp_step_and_wide_ramp():
  step = np.zeros((128, 128), np.uint8)
  step[:, 64:] = 200                         # width 2 < JNB 3: blur not detected
  assert ev.cpbd(step) == 1.0
  ramp = np.zeros((128, 128))
  ramp[:, 50:60] = np.linspace(0, 200, 12)[1:11]
  ramp[:, 60:] = 200                         # width ~11 >> 3: blur detected at every edge
  assert ev.cpbd(ramp.astype(np.uint8)) == 0.0
  assert math.isnan(ev.cpbd(np.full((128, 128, 3), 90, np.uint8)))  # no edge at all


def test_cpbd_falls_as_a_photo_blurs():
  img = data.astronaut()
  values = [ev.cpbd(_blur(img, s)) for s in (0, 0.5, 1.0, 2.0)]
  assert all(a > b for a, b in zip(values, values[1:])), values
  assert 0.2 < values[0] < 0.8   # natural photos sit in the middle of the scale


def test_ssim_psnr_identical_and_noisy():
  rng = np.random.default_rng(0)
  a = np.stack([data.astronaut()[i * 40:i * 40 + 64, 150:214] for i in range(3)])
  assert ev.ssim(a, a) == pytest.approx(1.0) and ev.psnr(a, a) == 100.0
  noisy = np.clip(a + rng.normal(0, 10, a.shape), 0, 255).astype(np.uint8)
  mse = np.mean((noisy.astype(float) - a) ** 2, axis=(1, 2, 3))
  assert ev.psnr(noisy, a) == pytest.approx(np.mean(10 * np.log10(255 ** 2 / mse)), rel=1e-6)
  assert ev.ssim(noisy, a) < 0.9



def test_pose_error_wraps_and_lmd_counts_mouth_points():
  np.testing.assert_allclose(ev.pose_error_per_frame(np.array([[179.0, -10, 5]]),
                                                     np.array([[-179.0, 10, 5]])), [[2, 20, 0]])
  a = np.zeros((2, 68, 2))
  b = a.copy()
  b[:, 48:68] += (3.0, 4.0)       # every mouth point 5 px away
  b[:, :48] += 100.0              # other points do not count
  np.testing.assert_allclose(ev.lmd_per_frame(b, a), [5.0, 5.0])
