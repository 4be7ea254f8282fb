"""The mouth of a SynthTalk-style frame, by analysis by synthesis (step 7 of `analyzer`).

The mouth model of `identity` (lips and interior ellipses) is mapped onto the image with the
estimated pose, blurred by a fitted Gaussian and coloured by linear least squares; openness,
width, a small shift and the blur are fitted by nonlinear least squares, started from a
moment-based estimate.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import optimize

from pcavs_jax.data.synthtalk import identity as ident
from pcavs_jax.data.synthtalk import render


def _coverage(qx: np.ndarray, qy: np.ndarray, jinv: np.ndarray, a: float,
              b: float) -> np.ndarray:
  """Soft (0..1) pixel coverage by the ellipse (a, b) at decal coordinates (qx, qy).

  The signed distance to the edge in image pixels is (f - 1) / |grad f|, with f the ellipse's
  quadratic form and the gradient carried to the image by J^-T; coverage ramps over 1 px.
  """
  if a <= 1e-3 or b <= 1e-3:
    return np.zeros_like(qx)
  f = (qx / a) ** 2 + (qy / b) ** 2
  gx, gy = 2 * qx / a ** 2, 2 * qy / b ** 2
  gpx = jinv[0, 0] * gx + jinv[1, 0] * gy
  gpy = jinv[0, 1] * gx + jinv[1, 1] * gy
  d = (f - 1) / np.maximum(np.sqrt(gpx * gpx + gpy * gpy), 1e-6)
  return np.clip(0.5 - d, 0.0, 1.0)


class _MouthFit:
  """Analysis by synthesis of the mouth window.

  The window is skin (an affine colour field, for shading), lips and interior: coverage of the
  mouth model's two ellipses, mapped through the pose's tangent-plane Jacobian and blurred by
  an unknown Gaussian. For each geometry (openness, width, shift, blur) the colours follow by
  regularised linear least squares, so only the geometry is searched.
  """

  def __init__(self, win: np.ndarray, region: np.ndarray, centre: np.ndarray, jac: np.ndarray,
               skin: np.ndarray, dark: np.ndarray, blur: float):
    self.region = region
    self.blur = blur
    # The outline's blur, as a weak prior on the mouth's: it settles the trade between a
    # larger, fainter mouth and a smaller, sharper one when blur and noise blunt the edges.
    self.prior_weight = math.sqrt(0.1 * region.sum() * 3) * 5.0 / 0.25
    self.obs = win[region]
    ys, xs = np.mgrid[:win.shape[0], :win.shape[1]].astype(np.float64)
    self.px, self.py = xs - centre[0], ys - centre[1]
    self.ramp = np.stack([self.px[region], self.py[region]], -1) / 10.0
    self.jinv = np.linalg.inv(jac)
    self.prior = (skin, dark)

  def layers(self, theta: np.ndarray) -> np.ndarray:
    """Design matrix (pixels, 5): skin, skin * x, skin * y, lips, interior coverages."""
    mouth_open, mouth_width, dx, dy, sigma = theta
    a_in, b_in, a_lip, b_lip = render.mouth_shape(mouth_open, mouth_width)
    x, y = self.px - dx, self.py - dy
    qx = self.jinv[0, 0] * x + self.jinv[0, 1] * y
    qy = self.jinv[1, 0] * x + self.jinv[1, 1] * y
    lip = _coverage(qx, qy, self.jinv, a_lip, b_lip)
    # The interior fades in over its first half pixel of height: the model stays continuous.
    height_px = b_in / max(math.hypot(self.jinv[1, 0], self.jinv[1, 1]), 1e-6)
    inside = _coverage(qx, qy, self.jinv, a_in, max(b_in, 1e-3)) * min(1.0, height_px / 0.5)
    k = 2 * int(math.ceil(3 * sigma)) + 1
    blur = lambda m: cv2.GaussianBlur(m, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)
    lip, inside = blur(lip)[self.region], blur(inside)[self.region]
    skin = 1.0 - lip
    return np.concatenate([skin[:, None], skin[:, None] * self.ramp,
                           (lip - inside)[:, None], inside[:, None]], 1)

  def colours(self, design: np.ndarray) -> np.ndarray:
    """(5, 3): skin, its x and y gradients, lips and interior colours."""
    lam = 1e-2 * len(design)
    reg = np.diag([lam, lam * 0.1, lam * 0.1, 1e-6, lam])
    rhs = design.T @ self.obs
    rhs[0] += lam * self.prior[0]
    rhs[4] += lam * self.prior[1]
    return np.linalg.solve(design.T @ design + reg, rhs)

  def residual(self, theta: np.ndarray) -> np.ndarray:
    design = self.layers(theta)
    prior = self.prior_weight * (theta[4] - self.blur)
    return np.append((design @ self.colours(design) - self.obs).ravel(), prior)


def _ellipse_moments(w: np.ndarray, origin: np.ndarray) -> tuple[float, np.ndarray]:
  """Mass and covariance (2x2) of a soft mask, in analysis pixels."""
  m = float(w.sum())
  if m <= 1e-6:
    return 0.0, np.zeros((2, 2))
  ys, xs = np.mgrid[:w.shape[0], :w.shape[1]]
  xs, ys = xs - origin[0], ys - origin[1]
  mx, my = (w * xs).sum() / m, (w * ys).sum() / m
  cxx = (w * (xs - mx) ** 2).sum() / m
  cyy = (w * (ys - my) ** 2).sum() / m
  cxy = (w * (xs - mx) * (ys - my)).sum() / m
  return m, np.array([[cxx, cxy], [cxy, cyy]])


def _deblur(area: float, cov: np.ndarray) -> np.ndarray:
  """Removes isotropic blur variance s from a uniform ellipse's covariance.

  A uniform ellipse of area A has 4 pi sqrt(det cov) = A; blur adds s to both variances and
  keeps A, so s solves det(cov - s I) = (A / 4 pi)^2 (the smaller root).
  """
  target = (area / (4 * math.pi)) ** 2
  tr, det = cov[0, 0] + cov[1, 1], float(np.linalg.det(cov))
  s = (tr - math.sqrt(max(tr * tr - 4 * (det - target), 0.0))) / 2
  s = float(np.clip(s, 0.0, max(0.0, min(cov[0, 0], cov[1, 1]) - 0.05)))
  return cov - s * np.eye(2)


def _mouth_moments(win, inner, skin, dark, origin, jac) -> tuple[float, float]:
  """Quick openness and width from unmixed masses and second moments (the fit's start)."""
  cand = win[inner]
  axis = dark - skin
  t = np.clip(((cand - skin) @ axis) / (axis @ axis), 0, 1)
  off = np.linalg.norm(cand - (skin + t[:, None] * axis), axis=-1)
  lips = cand[off >= np.percentile(off, 85)].mean(0) if cand.size else skin
  coef = (win - skin) @ np.linalg.pinv(np.stack([lips - skin, dark - skin], 1)).T
  m_mouth = np.where(inner, np.clip(coef[..., 0] + coef[..., 1], 0, 1), 0)
  m_in = np.where(inner, np.clip(coef[..., 1], 0, 1), 0)
  area, cov = _ellipse_moments(m_mouth, origin)
  jinv = np.linalg.inv(jac)
  cov_h = jinv @ _deblur(area, cov) @ jinv.T
  a_lip = 2.0 * math.sqrt(max(cov_h[0, 0], 0.0))
  a_in = max(a_lip - ident.LIP_X, 1.0)
  mouth_open = float(m_in.sum()) / abs(np.linalg.det(jac)) / (math.pi * a_in) / ident.MOUTH_B1
  width = (a_in - ident.MOUTH_A0) / ident.MOUTH_A1
  return float(np.clip(mouth_open, 0, 1)), float(np.clip(width, 0, 1))


def read_mouth(img: np.ndarray, blob: np.ndarray, inside_face: np.ndarray, skin: np.ndarray,
               beta: np.ndarray, centre_px: np.ndarray, jac: np.ndarray,
               outline_blur: float) -> tuple[float, float, np.ndarray]:
  """Mouth openness, width and lip colour by fitting the mouth model to the mouth window.

  Args:
    img: the analysis image (H, W, 3) float; blob: its mouth's non-skin pixels;
    inside_face: the face's (eroded) hull; skin: the skin colour; beta: per-pixel shading.
    centre_px: the mouth centre; jac: (2, 2) image pixels per head unit at the mouth (the
      pose's tangent-plane Jacobian); outline_blur: the face outline's blur (px).
  """
  ys, xs = np.nonzero(blob)
  pad = 6
  r0, r1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, img.shape[0])
  c0, c1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, img.shape[1])
  win = img[r0:r1, c0:c1].astype(np.float64)
  inner = blob[r0:r1, c0:c1]
  outer = ~inner
  local_skin = np.median(win[outer], axis=0) if outer.sum() > 5 else skin
  shade = float(np.median(beta[r0:r1, c0:c1][outer])) if outer.sum() > 5 else 1.0
  dark = ident.MOUTH_INSIDE.astype(np.float64) * shade
  origin = np.array([centre_px[0] - c0, centre_px[1] - r0])
  start = _mouth_moments(win, inner, local_skin, dark, origin, jac)
  # Fit inside the face only: a turned head brings the mouth near the outline.
  region = (cv2.dilate(inner.astype(np.uint8),
                       cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0) & (
                           inside_face[r0:r1, c0:c1])
  # The outline reads a little blurrier than the mouth (shading steepens toward the outline).
  blur = float(np.clip(outline_blur - 0.17, 0.6, 3.8))
  fit = _MouthFit(win, region, origin, jac, local_skin, dark, blur)
  r = optimize.least_squares(fit.residual, [*start, 0.0, 0.0, blur],
                             bounds=([0.0, -0.15, -3, -3, 0.5], [1.15, 1.15, 3, 3, 4.0]),
                             x_scale=[0.1, 0.1, 0.5, 0.5, 0.3], diff_step=1e-3,
                             xtol=1e-3, ftol=1e-4)
  lips = fit.colours(fit.layers(r.x))[3]
  return float(np.clip(r.x[0], 0, 1)), float(np.clip(r.x[1], 0, 1)), lips
