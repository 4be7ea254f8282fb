"""Reads head pose, mouth shape and identity colours back from a SynthTalk-style frame.

Classical CV, no ground truth: the judge of generated frames in the cross-driven benchmark.

1. The frame is resampled to 128 px and lightly smoothed, so every input size and noise level
   looks alike to the thresholds below.
2. Background: a per-row linear colour model fitted to the left, right and bottom borders.
3. Skin: the median colour of the foreground's centre, then every pixel whose colour is a shade
   of it (small distance from the line through the skin colour, whatever the brightness), so
   Lambert shading stays skin. The largest skin region is the face.
4. Features: blobs of "non-skin" (other chroma, or brighter or darker than the smooth shading
   around) inside the face's convex hull; the mouth is the lowest, the eyes (merged with their
   brows) the two largest above it. A feature's position is the centroid of its soft non-skin
   mass, which blur and noise hardly move.
5. Head centre: the face outline below the eyes (above them hair cuts into it) is the outline
   of an ellipsoid, an ellipse around the head's centre whose shape follows from the pose and
   the head's axes; centre and head width are fitted to it, alternating with the pose.
6. Pose: yaw, pitch, roll by least squares of the eye and mouth offsets from the head centre
   against a rigid 3-D model of those points (the layout every identity shares); tx, ty from
   the head centre.
7. Mouth: analysis by synthesis of the mouth window (`mouth_reader`).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage, optimize
from skimage import measure

from pcavs_jax.data.synthtalk import identity as ident
from pcavs_jax.data.synthtalk import mouth_reader, render

SIZE = 128                          # analysis resolution
_K = SIZE / ident.ALIGNED_SIZE      # analysis pixels per aligned unit
_PRE_BLUR = 0.8                     # analysis smoothing (px)
_MEAN_AXES = np.array([61.0, 89.0, 74.0])

# Rigid model of the measured points in head coordinates (aligned units): the eye regions'
# centroids (an eye with its brow sits about 5 units above the eye centre) and the mouth centre.
_EYE_REGION_Y = ident.EYE_Y + 5.0
MODEL_POINTS = np.array([
    [-ident.EYE_X, _EYE_REGION_Y, render.surface_z(_MEAN_AXES, ident.EYE_X, _EYE_REGION_Y)],
    [ident.EYE_X, _EYE_REGION_Y, render.surface_z(_MEAN_AXES, ident.EYE_X, _EYE_REGION_Y)],
    [0.0, ident.MOUTH_Y, render.surface_z(_MEAN_AXES, 0.0, ident.MOUTH_Y)],
])

# Full ranges of the read quantities (errors are reported as fractions of these).
RANGES = {"yaw": 60.0, "pitch": 40.0, "roll": 30.0, "tx": 0.06, "ty": 0.06,
          "mouth_open": 1.0, "mouth_width": 1.0}
KEYS = ("yaw", "pitch", "roll", "tx", "ty", "mouth_open", "mouth_width")
COLOUR_KEYS = ("skin", "lips", "hair", "background")


class AnalysisError(ValueError):
  """The frame does not show a face the analyzer can read."""


def _prepare(frame: np.ndarray) -> np.ndarray:
  raw = np.asarray(frame)
  if raw.ndim != 3 or raw.shape[-1] != 3:
    raise ValueError(f"expected an (H, W, 3) frame, got {raw.shape}")
  img = raw.astype(np.float32)
  if raw.dtype != np.uint8 and img.max() <= 1.0 + 1e-6:
    img = img * 255.0
  interp = cv2.INTER_AREA if img.shape[0] > SIZE else cv2.INTER_LINEAR
  img = cv2.resize(img, (SIZE, SIZE), interpolation=interp)
  return cv2.GaussianBlur(img, (0, 0), _PRE_BLUR)


def _background(img: np.ndarray) -> np.ndarray:
  """Per-row background colour (SIZE, 3): a linear fit over rows to the border pixels."""
  b = 3
  rows = np.arange(SIZE, dtype=np.float64)
  y = np.concatenate([rows, rows, np.repeat(rows[-b:], SIZE - 2 * b)])
  c = np.concatenate([img[:, :b].mean(1), img[:, -b:].mean(1),
                      img[-b:, b:-b].reshape(-1, 3)]).astype(np.float64)
  design = np.stack([np.ones_like(y), y], 1)
  coef = np.linalg.lstsq(design, c, rcond=None)[0]
  # Refit without the samples farthest from the first fit (a head touching the border).
  err = np.linalg.norm(design @ coef - c, axis=1)
  keep = err <= max(np.percentile(err, 80), 6.0)
  coef = np.linalg.lstsq(design[keep], c[keep], rcond=None)[0]
  return (np.stack([np.ones(SIZE), rows], 1) @ coef).astype(np.float32)


def _shade_of(img: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Brightness factor and chroma distance of every pixel from colour `ref`."""
  ref = np.asarray(ref, np.float32)
  if float(ref @ ref) < 1.0:  # a black "skin" (a generated frame gone dark) has no shading
    raise AnalysisError(f"skin colour {ref.tolist()} is black")
  beta = (img @ ref) / np.float32(ref @ ref)
  resid = np.linalg.norm(img - beta[..., None] * ref, axis=-1)
  return beta, resid


def _largest(mask: np.ndarray) -> np.ndarray:
  n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
  if n <= 1:
    return np.zeros(mask.shape, bool)
  return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _centroid(w: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Centroid (x, y) of the weights `w` inside `mask` (of the mask itself if they are all 0)."""
  w = np.where(mask, w, 0.0)
  if w.sum() <= 1e-6:
    w = mask.astype(np.float64)
  ys, xs = np.mgrid[:w.shape[0], :w.shape[1]]
  m = w.sum()
  return np.array([(w * xs).sum() / m, (w * ys).sum() / m])


def _project(points: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
  """Image offsets (x right, y down; aligned units) of head points from the head centre."""
  cam = points @ render.rotation(yaw, pitch, roll).T
  return np.stack([cam[:, 0], -cam[:, 1]], 1)


def _solve_pose(offsets: np.ndarray) -> np.ndarray:
  """Least-squares (yaw, pitch, roll) from the measured offsets of MODEL_POINTS."""
  seen = np.isfinite(offsets[:, 0])       # an eye may be missing
  roll0 = 0.0
  if seen[:2].all():
    eye_dx = offsets[1] - offsets[0]
    roll0 = -math.atan2(eye_dx[1], eye_dx[0])
  # Start from the offsets with roll undone: their mean moves with depth * sin(yaw or pitch).
  c, s = math.cos(roll0), math.sin(roll0)
  mean = offsets[seen].mean(0)
  mx, my = c * mean[0] - s * mean[1], s * mean[0] + c * mean[1]
  rest = _project(MODEL_POINTS[seen], 0.0, 0.0, 0.0).mean(0)
  depth = MODEL_POINTS[seen, 2].mean()
  yaw0 = math.degrees(math.asin(np.clip((mx - rest[0]) / depth, -0.9, 0.9)))
  pitch0 = math.degrees(math.asin(np.clip(-(my - rest[1]) / depth, -0.9, 0.9)))
  resid = lambda a: (_project(MODEL_POINTS[seen], *a) - offsets[seen]).ravel()
  return optimize.least_squares(resid, [yaw0, pitch0, math.degrees(roll0)], method="lm").x


def _tangent_jacobian(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """d(image x, y down) / d(head x, y) at the mouth centre, for a decal on the mean head."""
  ax, ay, az = _MEAN_AXES
  y0 = ident.MOUTH_Y
  dz_dy = -(az ** 2 / ay ** 2) * y0 / render.surface_z(_MEAN_AXES, 0.0, y0)
  basis = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, dz_dy]])   # d(head point) / dx, / dy
  cam = basis @ render.rotation(yaw, pitch, roll).T
  return np.array([[cam[0, 0], cam[1, 0]], [-cam[0, 1], -cam[1, 1]]])


def _segment(img: np.ndarray):
  """Background, skin colour, shading and chroma maps, the face region and its outline."""
  bg = _background(img)
  fg = _largest(np.linalg.norm(img - bg[:, None, :], axis=-1) > 30.0)
  if fg.sum() < 0.05 * SIZE * SIZE:
    raise AnalysisError("no foreground")
  centre = np.zeros_like(fg)
  centre[int(0.33 * SIZE):int(0.62 * SIZE), int(0.3 * SIZE):int(0.7 * SIZE)] = True
  centre &= fg
  if centre.sum() < 20:
    raise AnalysisError("no face in the frame's centre")
  skin = np.median(img[centre], axis=0)
  beta, resid = _shade_of(img, skin)
  near = centre & (resid < 20.0) & (beta > 0.7) & (beta < 1.3)
  if near.sum() >= 20:
    skin = np.median(img[near], axis=0)
    beta, resid = _shade_of(img, skin)
  face = _largest(fg & (resid < 16.0) & (beta > 0.55) & (beta < 1.4))
  if face.sum() < 0.03 * SIZE * SIZE:
    raise AnalysisError("no skin region")
  contour = max(cv2.findContours(face.astype(np.uint8), cv2.RETR_EXTERNAL,
                                 cv2.CHAIN_APPROX_NONE)[0], key=len)[:, 0, :]
  hull = np.zeros((SIZE, SIZE), np.uint8)
  cv2.fillConvexPoly(hull, cv2.convexHull(contour), 1)
  return bg, fg, skin, beta, resid, face, contour, hull.astype(bool)


def _redness(img: np.ndarray) -> np.ndarray:
  """(R - G) / (R + G + B): shading-invariant, and higher on lips and mouth than on skin."""
  return (img[..., 0] - img[..., 1]) / np.maximum(img.sum(-1), 1.0)


def _nonskin(beta, resid, face, hull) -> np.ndarray:
  """Soft (0..1) map of how little each pixel inside the face looks like skin."""
  # Noise raises every pixel's chroma distance: measure that floor on the skin, lift above it.
  floor = max(6.0, 2.5 * float(np.median(resid[face])))
  out = np.clip((resid - floor) / 18.0, 0, 1)
  # Brightness against the smooth shading of the skin around: features are small, shading is
  # broad, so pale eyes and brows on pale skin still stand out.
  w = face.astype(np.float32)
  local = cv2.GaussianBlur(beta * w, (0, 0), 6.0) / np.maximum(
      cv2.GaussianBlur(w, (0, 0), 6.0), 1e-3)
  out = np.maximum(out, np.clip((np.abs(beta - local) - 0.05 - floor / 200.0) / 0.15, 0, 1))
  out = np.maximum(out, np.clip((0.62 - beta) / 0.25, 0, 1))
  out = np.maximum(out, np.clip((beta - 1.3) / 0.2, 0, 1))
  inner = cv2.erode(hull.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
  return np.where(inner, out, 0.0).astype(np.float32)


def _pick_eyes(cands: list[int], cents: np.ndarray, areas: np.ndarray,
               mouth: np.ndarray) -> list[int]:
  """The pair of blobs that looks most like two eyes above this mouth (left to right).

  Eye regions sit 50 aligned units apart at rest (less when the head turns), about 64 units
  above the mouth along the perpendicular of the line through them, and have similar sizes.
  """
  if len(cands) < 2:
    return cands
  best, best_cost = None, np.inf
  for n, i in enumerate(cands):
    for j in cands[n + 1:]:
      a, b = sorted((i, j), key=lambda k: cents[k][0])
      axis = cents[b] - cents[a]
      dist = float(np.linalg.norm(axis))
      to_mouth = mouth - (cents[a] + cents[b]) / 2
      drop = float(np.linalg.norm(to_mouth))
      slant = abs(float(axis @ to_mouth)) / max(dist * drop, 1e-6)
      cost = (((dist - 46.0 * _K) / (8.0 * _K)) ** 2 + ((drop - 64.0 * _K) / (12.0 * _K)) ** 2
              + (slant / 0.3) ** 2 + math.log(areas[a] / areas[b]) ** 2)
      if cost < best_cost:
        best, best_cost = [a, b], cost
  return best


def _features(nonskin: np.ndarray, red: np.ndarray, hull: np.ndarray):
  """Eye and mouth positions (3, 2) in analysis px, and the mouth blob's mask.

  Blobs are found on the smoothed non-skin map, helped by the smoothed excess redness over the
  skin (lips are redder than skin, which keeps a closed mouth visible through blur and noise).
  """
  reddish = np.clip((cv2.GaussianBlur(red, (0, 0), 1.5) - 0.04) / 0.08, 0, 1)
  found = np.maximum(cv2.GaussianBlur(nonskin, (0, 0), 1.2), reddish)
  core = (np.where(hull, found, 0.0) > 0.3).astype(np.uint8)
  merged = cv2.dilate(core, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
  n, lab, stats, cents = cv2.connectedComponentsWithStats(merged, connectivity=8)
  top = np.nonzero(hull.any(1))[0][0]
  # Blobs touching the top of the hull are hair.
  blobs = [i for i in range(1, n)
           if stats[i, cv2.CC_STAT_AREA] >= 12 and stats[i, cv2.CC_STAT_TOP] > top + 2]
  if len(blobs) < 2:
    raise AnalysisError(f"found {len(blobs)} facial features, need an eye and a mouth")
  mouth = max(blobs, key=lambda i: cents[i][1])
  above = [i for i in blobs if i != mouth and cents[i][1] < cents[mouth][1] - 8]
  if not above:
    raise AnalysisError("eyes not found")
  eyes = _pick_eyes(sorted(above, key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:6], cents,
                    stats[:, cv2.CC_STAT_AREA], cents[mouth])
  pts = np.full((3, 2), np.nan)
  pts[2] = _centroid(np.maximum(nonskin, reddish), lab == mouth)
  if len(eyes) == 2:
    pts[0], pts[1] = (_centroid(nonskin, lab == i) for i in eyes)
  else:
    # A far eye lost at the outline of a turned head: the other is on the mouth's far side.
    side = 0 if cents[eyes[0]][0] < pts[2][0] else 1
    pts[side] = _centroid(nonskin, lab == eyes[0])
  return pts, lab == mouth


def _outline_below_eyes(img, bg, skin, beta, face, pts) -> tuple[np.ndarray, np.ndarray]:
  """Sub-pixel face outline (analysis px, x/y) well below the eye line, off the image border.

  Each pixel is unmixed between the row's background and the locally shaded skin colour; the
  outline is that mix's 0.5 level line, which blur leaves in place (a binary mask would shrink
  with blur). Only stretches next to skin count, so hair never enters.

  Returns:
    The outline points and the unmixed skin fraction (alpha) map.
  """
  w = face.astype(np.float32)
  shade = cv2.GaussianBlur(beta * w, (0, 0), 4.0) / np.maximum(
      cv2.GaussianBlur(w, (0, 0), 4.0), 1e-3)
  fore = shade[..., None] * skin - bg[:, None, :]
  off = img - bg[:, None, :]
  alpha = (off * fore).sum(-1) / np.maximum((fore * fore).sum(-1), 1e-3)
  # Pixels off the background-to-skin line (hair) count as background: where hair shows beside
  # the face below the eyes, it is behind the head, so that edge is the head's outline too.
  mixed = np.linalg.norm(off - alpha[..., None] * fore, axis=-1) < 25.0
  raw = alpha
  alpha = np.where(face, 1.0, np.where(mixed, np.clip(alpha, 0, 1), 0.0))
  lines = measure.find_contours(alpha, 0.5)
  if not lines:
    raise AnalysisError("face outline not found")
  yx = max(lines, key=len)
  near = cv2.dilate(face.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
  ij = np.clip(np.rint(yx).astype(int), 0, SIZE - 1)
  xy = yx[:, ::-1]
  eye_mid = np.nanmean(pts[:2], axis=0)
  down = pts[2] - eye_mid
  dist = float(np.linalg.norm(down))
  rel = (xy - eye_mid) @ (down / max(dist, 1e-6))
  keep = (near[ij[:, 0], ij[:, 1]] & (rel > 0.3 * dist) & (xy[:, 0] > 1)
          & (xy[:, 0] < SIZE - 2) & (xy[:, 1] < SIZE - 2))
  if keep.sum() < 12:
    raise AnalysisError("face outline not found")
  return xy[keep], raw


def _edge_blur(alpha: np.ndarray, outline: np.ndarray, centre: np.ndarray) -> float:
  """Blur (Gaussian sigma, analysis px) of the face outline: a step blurred by sigma has slope
  1 / (sigma sqrt(2 pi)) at its middle; the slope is read across the outline (toward the
  centre), where noise averages out."""
  gy, gx = np.gradient(alpha)
  normal = outline - centre
  normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-6)
  at = [outline[:, 1], outline[:, 0]]
  slope = -np.median(ndimage.map_coordinates(gx, at, order=1) * normal[:, 0]
                     + ndimage.map_coordinates(gy, at, order=1) * normal[:, 1])
  return float(1.0 / (math.sqrt(2 * math.pi) * max(slope, 0.05)))


def _outline_matrix(width: float, pose) -> np.ndarray:
  """2x2 matrix M of the head's outline {p : p^T M p = 1} (image offsets, y down, aligned
  units) for a head of the given half-width and the mean height and depth."""
  rot = render.rotation(*pose)
  q = rot @ np.diag(1.0 / np.array([width, _MEAN_AXES[1], _MEAN_AXES[2]]) ** 2) @ rot.T
  m = q[:2, :2] - np.outer(q[:2, 2], q[2, :2]) / q[2, 2]   # minimise over depth
  flip = np.diag([1.0, -1.0])
  return flip @ m @ flip


def _fit_head(outline: np.ndarray, pose, start: np.ndarray) -> tuple[np.ndarray, float]:
  """Head centre (analysis px) and half-width (aligned units) from the outline at a pose.

  The outline of an ellipsoid is an ellipse whose shape follows from the pose and the head's
  axes; only the width varies much between identities, so centre and width are fitted.
  """
  pts = outline / _K

  def resid(theta):
    cx, cy, width = theta
    m = _outline_matrix(width, pose)
    dx, dy = pts[:, 0] - cx, pts[:, 1] - cy
    gx, gy = m[0, 0] * dx + m[0, 1] * dy, m[1, 0] * dx + m[1, 1] * dy
    f = dx * gx + dy * gy
    return (f - 1) / np.maximum(2 * np.sqrt(gx * gx + gy * gy), 1e-9)  # ~ distance to outline

  r = optimize.least_squares(resid, [start[0] / _K, start[1] / _K, _MEAN_AXES[0]],
                             bounds=([-np.inf, -np.inf, 45.0], [np.inf, np.inf, 80.0]),
                             loss="soft_l1", f_scale=1.0, xtol=1e-4)
  return r.x[:2] * _K, float(r.x[2])


def analyze_frame(frame: np.ndarray) -> dict[str, float | np.ndarray]:
  """Reads pose, mouth and the identity descriptor from one frame.

  Args:
    frame: (H, W, 3) RGB, uint8, or float in [0, 1] or [0, 255]; any size.

  Returns:
    yaw, pitch, roll (degrees, `render` conventions), tx, ty (fractions of the image),
    mouth_open, mouth_width (the mouth model's [0, 1] units), and the identity descriptor: skin,
    lips, hair, background (RGB, hair NaN when none shows) and head_width (aligned units).

  Raises:
    AnalysisError: when no face with two eyes and a mouth is found.
  """
  img = _prepare(frame)
  bg, fg, skin, beta, resid, face, contour, hull = _segment(img)
  nonskin = _nonskin(beta, resid, face, hull)
  red = _redness(img) - _redness(skin.astype(np.float32))
  inner = cv2.erode(hull.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
  pts, mouth_blob = _features(nonskin, red, inner)
  outline, alpha = _outline_below_eyes(img, bg, skin, beta, face, pts)
  (cx, cy), _, _ = cv2.fitEllipse(outline.astype(np.float32))
  centre = np.array([cx, cy])
  blur = _edge_blur(alpha, outline, centre)
  # Pose from a free ellipse's centre, then the centre from the outline that pose implies
  # (a free fit pins the centre poorly along the face), then the pose again.
  pose = _solve_pose((pts - centre) / _K)
  centre, head_width = _fit_head(outline, pose, centre)
  yaw, pitch, roll = _solve_pose((pts - centre) / _K)
  tx = ((centre[0] + 0.5) / _K - ident.HEAD_CENTRE[0]) / ident.ALIGNED_SIZE
  ty = ((centre[1] + 0.5) / _K - ident.HEAD_CENTRE[1]) / ident.ALIGNED_SIZE
  inside_face = cv2.erode(hull.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
  jac = _tangent_jacobian(yaw, pitch, roll) * _K   # analysis px per head unit
  mouth_open, mouth_width, lips = mouth_reader.read_mouth(img, mouth_blob, inside_face, skin,
                                                          beta, pts[2], jac, blur)
  hair_region = fg & ~hull & (resid > 30.0)
  hair_region[int(0.45 * SIZE):] = False
  hair = np.median(img[hair_region], axis=0) if hair_region.sum() > 10 else np.full(3, np.nan)
  return {
      "yaw": float(yaw), "pitch": float(pitch), "roll": float(roll),
      "tx": float(tx), "ty": float(ty),
      "mouth_open": mouth_open, "mouth_width": mouth_width,
      "skin": skin.astype(np.float32), "lips": lips.astype(np.float32),
      "hair": hair.astype(np.float32), "background": bg[SIZE // 2].astype(np.float32),
      "head_width": float(head_width),
  }


def analyze_frames(frames: np.ndarray) -> dict[str, np.ndarray]:
  """`analyze_frame` over (T, H, W, 3) frames: name -> (T,) or (T, 3); NaN where unreadable.

  A frame equal to an earlier one (a still video) is read once.
  """
  out: dict[str, list] = {}
  read: dict[bytes, dict] = {}
  for frame in np.asarray(frames):
    key = frame.tobytes()
    if key not in read:
      try:
        read[key] = analyze_frame(frame)
      except AnalysisError:
        r = {k: np.nan for k in KEYS + ("head_width",)}
        r.update({k: np.full(3, np.nan, np.float32) for k in COLOUR_KEYS})
        read[key] = r
    for k, v in read[key].items():
      out.setdefault(k, []).append(v)
  return {k: np.asarray(v, np.float32) for k, v in out.items()}
