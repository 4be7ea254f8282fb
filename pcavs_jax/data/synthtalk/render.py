"""The SynthTalk renderer: any (identity, pose, mouth) to an aligned RGB frame.

The head is ray-cast, not drawn as a sprite: every image sample is a ray along the camera axis
(orthographic camera), turned into head coordinates by the inverse of the head rotation and
intersected with the head ellipsoid, a nose ellipsoid and a hair shell. Eyes, brows and mouth are
decals on the head surface, defined over its (x, y) head coordinates, so they turn, foreshorten
and hide with the head. Lambert shading with a fixed light, 3x3 (or 2x2) supersampling for
anti-aliasing, rounding to uint8.

Everything is computed from float32 copies of the parameters, frame by frame, with elementwise
numpy arithmetic only, so stored float32 ground truth re-renders to the same bytes.

Pose conventions (degrees): yaw > 0 turns the face toward the image's right, pitch > 0 lifts the
chin (the face looks up), roll > 0 turns the face counter-clockwise in the image. tx, ty shift
the head by that fraction of the image size (x right, y down).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

from pcavs_jax.data.synthtalk import identity as ident

_LIGHT = np.array([-0.35, 0.45, 1.0]) / np.linalg.norm([-0.35, 0.45, 1.0])
_AMBIENT = 0.72
_DIFFUSE = 0.28

# Material labels of the label map.
BACKGROUND, SKIN, HAIR, BROW, SCLERA, IRIS, PUPIL, LIPS, INSIDE, NOSE = range(10)
POSE_KEYS = ("yaw", "pitch", "roll", "tx", "ty")
MOUTH_KEYS = ("mouth_open", "mouth_width")


def default_supersample(resolution: int) -> int:
  """Samples per pixel side: 3 up to 128 px, 2 above (about 150k+ samples per frame)."""
  return 3 if resolution <= 128 else 2


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """Head-to-camera rotation Rz(roll) Rx(-pitch) Ry(yaw), (3, 3), angles in degrees.

  Written out in scalar arithmetic rather than matrix products, so no linear-algebra library
  (BLAS kernel choice) can change its last bits, and with them the rendered bytes.
  """
  y, p, r = (math.radians(float(a)) for a in (yaw, pitch, roll))
  cy, sy = math.cos(y), math.sin(y)
  cp, sp = math.cos(p), math.sin(p)
  cr, sr = math.cos(r), math.sin(r)
  return np.array([[cr * cy + sr * sp * sy, -sr * cp, cr * sy - sr * sp * cy],
                   [sr * cy - cr * sp * sy, cr * cp, sr * sy + cr * sp * cy],
                   [-cp * sy, -sp, cp * cy]])


def _dot(a, b) -> float:
  return float(a[0]) * float(b[0]) + float(a[1]) * float(b[1]) + float(a[2]) * float(b[2])


def surface_z(axes: np.ndarray, x: float, y: float) -> float:
  """Depth of the head ellipsoid's front surface above head point (x, y)."""
  ax, ay, az = (float(a) for a in axes)
  return az * math.sqrt(max(0.0, 1.0 - (x / ax) ** 2 - (y / ay) ** 2))


@functools.lru_cache(maxsize=8)
def _grid(resolution: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
  """Sample centres in aligned units: u (1, N) across, v (N, 1) down."""
  n = resolution * supersample
  c = ((np.arange(n, dtype=np.float64) + 0.5) * (ident.ALIGNED_SIZE / n)).astype(np.float32)
  return c[None, :], c[:, None]


class _Rays:
  """Orthographic rays through the sample grid, expressed in head coordinates.

  A camera point (X, Y, s) is head point X * r0 + Y * r1 + s * r2, with r_k the rows of the
  head-to-camera rotation; s grows toward the camera.
  """

  def __init__(self, rot: np.ndarray, x: np.ndarray, y: np.ndarray):
    self.rot = rot
    self.x = x    # (1, N) camera X of the samples
    self.y = y    # (N, 1) camera Y of the samples

  def hit(self, centre, axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Front and back ray parameters of an ellipsoid; (s_front, s_back, hit mask)."""
    centre = np.asarray(centre, np.float64)
    axes = np.asarray(axes, np.float64)
    r0, r1, r2 = self.rot[0] / axes, self.rot[1] / axes, self.rot[2] / axes
    c = centre / axes
    dd = _dot(r2, r2)
    # o(X, Y) = X r0 + Y r1 - c in unit-sphere coordinates; b = o.d and |o|^2 are quadratic fields.
    b = (self.x * np.float32(_dot(r0, r2)) + self.y * np.float32(_dot(r1, r2))) - np.float32(
        _dot(c, r2))
    oo = None
    for k in range(3):
      o_k = (self.x * np.float32(r0[k]) + self.y * np.float32(r1[k])) - np.float32(c[k])
      oo = o_k * o_k if oo is None else oo + o_k * o_k
    disc = b * b - np.float32(dd) * (oo - np.float32(1.0))
    mask = disc >= 0
    root = np.sqrt(np.maximum(disc, np.float32(0.0)))
    inv = np.float32(1.0 / dd)
    return (root - b) * inv, (-root - b) * inv, mask

  def point(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head coordinates of ray points at parameter s."""
    r = self.rot.astype(np.float32)
    return tuple(self.x * r[0, k] + self.y * r[1, k] + s * r[2, k] for k in range(3))


def _shade(rays: _Rays, px, py, pz, centre, axes) -> np.ndarray:
  """Lambert shading of an ellipsoid surface at head points (px, py, pz)."""
  axes = np.asarray(axes, np.float64)
  light = np.array([_dot(rays.rot[:, k], _LIGHT) for k in range(3)])  # in head coordinates
  w = light / axes ** 2
  nx = (px - np.float32(centre[0]))
  ny = (py - np.float32(centre[1]))
  nz = (pz - np.float32(centre[2]))
  dot = nx * np.float32(w[0]) + ny * np.float32(w[1]) + nz * np.float32(w[2])
  norm = np.sqrt((nx * np.float32(1 / axes[0] ** 2)) ** 2 + (ny * np.float32(1 / axes[1] ** 2)) ** 2
                 + (nz * np.float32(1 / axes[2] ** 2)) ** 2)
  return np.float32(_AMBIENT) + np.float32(_DIFFUSE) * np.maximum(dot / norm, np.float32(0.0))


def mouth_shape(mouth_open: float, mouth_width: float) -> tuple[float, float, float, float]:
  """Half-axes (aligned units) of the mouth interior and of the lips: (a_in, b_in, a_lip, b_lip)."""
  a_in = ident.MOUTH_A0 + ident.MOUTH_A1 * float(mouth_width)
  b_in = ident.MOUTH_B1 * float(mouth_open)
  return a_in, b_in, a_in + ident.LIP_X, b_in + ident.LIP_Y


def _f32(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: np.asarray(v, np.float32) for k, v in params.items()}


def _extent(rot: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
  """Camera-plane bounding box (x0, x1, y0, y1) of a rotated ellipsoid, relative to the pivot."""
  c = rot @ centre
  half = np.sqrt(((rot[:2] * axes) ** 2).sum(axis=1))
  return np.array([c[0] - half[0], c[0] + half[0], c[1] - half[1], c[1] + half[1]])


def _box_extent(rot: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """Camera-plane bounding box of a head-coordinate box [lo, hi]."""
  corners = np.stack(np.meshgrid(*zip(lo, hi), indexing="ij"), -1).reshape(-1, 3)
  cam = corners @ rot.T
  return np.array([cam[:, 0].min(), cam[:, 0].max(), cam[:, 1].min(), cam[:, 1].max()])


class _Frame:
  """One frame's sample grid, pose and the camera-to-pixel mapping."""

  def __init__(self, rot: np.ndarray, cx: float, cy: float, resolution: int, ss: int):
    self.rot, self.cx, self.cy, self.res, self.ss = rot, cx, cy, resolution, ss
    self.u, self.v = _grid(resolution, ss)

  def window(self, ext: np.ndarray, margin: float = 2.0) -> tuple[slice, slice]:
    """Sample-grid slices (rows, cols) covering a camera-plane box, aligned to whole pixels."""
    k = self.res / ident.ALIGNED_SIZE
    c0 = math.floor((self.cx + ext[0] - margin) * k)
    c1 = math.ceil((self.cx + ext[1] + margin) * k)
    r0 = math.floor((self.cy - ext[3] - margin) * k)
    r1 = math.ceil((self.cy - ext[2] + margin) * k)
    clamp = lambda a: min(max(a, 0), self.res) * self.ss
    return slice(clamp(r0), clamp(r1)), slice(clamp(c0), clamp(c1))

  def rays(self, rows: slice, cols: slice) -> _Rays:
    return _Rays(self.rot, self.u[:, cols] - np.float32(self.cx),
                 np.float32(self.cy) - self.v[rows])


def _take(mask: np.ndarray, s: np.ndarray, depth: np.ndarray) -> np.ndarray:
  """Samples where a surface is hit in front of everything drawn so far; updates depth."""
  take = mask & (s > depth)
  np.copyto(depth, s, where=take)
  return take


def _shade_where(take, rays, point, centre, axes, shade) -> None:
  """Writes Lambert shading of an ellipsoid into `shade` at the samples in `take`."""
  if take.any():
    shade[take] = _shade(rays, *(c[take] for c in point), centre, axes)


def _decal_window(frame: _Frame, rot: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  rows: slice, cols: slice) -> tuple[slice, slice]:
  """The slices, within the head's sample window (rows, cols), of a decal's head-space box."""
  r, c = frame.window(_box_extent(rot, lo, hi))
  return (slice(max(r.start - rows.start, 0), max(r.stop - rows.start, 0)),
          slice(max(c.start - cols.start, 0), max(c.stop - cols.start, 0)))


def _draw_hair_and_head(p, rays: _Rays, axes: np.ndarray, labels: np.ndarray,
                        shade: np.ndarray, depth: np.ndarray) -> tuple[tuple, np.ndarray]:
  """Hair (above a plane through the hairline, both on a shell around the head and on the head)
  and the head; returns the head's hit points (x, y, z) and the face mask (front of the head)."""
  scale, lift, front, slope = (float(a) for a in p["hair_style"])
  shell_c = np.array([0.0, lift, -2.0])
  shell_a = axes * scale
  h0 = np.float32(front - slope * surface_z(axes, 0.0, front))
  above = lambda y, z: y > h0 + np.float32(slope) * z
  s_sf, s_sb, hit_shell = rays.hit(shell_c, shell_a)
  front_pt, back_pt = rays.point(s_sf), rays.point(s_sb)
  front_hair = hit_shell & above(front_pt[1], front_pt[2])
  back_hair = hit_shell & above(back_pt[1], back_pt[2]) & ~front_hair
  for mask, s, pt in ((back_hair, s_sb, back_pt), (front_hair, s_sf, front_pt)):
    take = _take(mask, s, depth)
    labels[take] = HAIR
    _shade_where(take, rays, pt, shell_c, shell_a, shade)

  origin = np.zeros(3)
  s_head, _, hit_head = rays.hit(origin, axes)
  head_pt = rays.point(s_head)
  _, hy, hz = head_pt
  take = _take(hit_head, s_head, depth)
  labels[take] = SKIN
  labels[take & above(hy, hz)] = HAIR
  _shade_where(take, rays, head_pt, origin, axes, shade)
  return head_pt, take & (hz > 0)


def _draw_eyes(p, hx, hy, face, labels, window: tuple[slice, slice]) -> None:
  """Brows, then eyes (sclera, iris, pupil) onto the face, within their window."""
  ew, eh, iris_frac = (float(a) for a in p["eye"])
  gap, thick, half_len, arch, _ = (float(a) for a in p["brow"])
  brow_y = ident.EYE_Y + eh + gap
  r, c = window
  wx, wy, wface, wlab = hx[r, c], hy[r, c], face[r, c], labels[r, c]
  for side in (-1.0, 1.0):
    dx = wx - np.float32(side * (ident.EYE_X + 1.5))
    dy = wy - (np.float32(brow_y) - np.float32(arch) * dx * dx)
    taper = np.float32(1.0) - np.float32(0.5 / half_len ** 2) * dx * dx
    wlab[wface & (np.abs(dx) < half_len) & (np.abs(dy) < np.float32(thick) * taper)] = BROW
    dx = wx - np.float32(side * ident.EYE_X)
    dy = wy - np.float32(ident.EYE_Y)
    lid = np.float32(eh) * (np.float32(1.0) - dx * dx * np.float32(1.0 / ew ** 2))
    eye = wface & (np.abs(dy) < lid)
    wlab[eye] = SCLERA
    rr = dx * dx + dy * dy
    wlab[eye & (rr < np.float32((iris_frac * eh) ** 2))] = IRIS
    wlab[eye & (rr < np.float32((0.45 * iris_frac * eh) ** 2))] = PUPIL


def _eye_box(p, axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Head-space box (lo, hi) around both eyes and brows."""
  _, eh, _ = (float(a) for a in p["eye"])
  gap, thick, half_len, _, _ = (float(a) for a in p["brow"])
  top = np.array([ident.EYE_X + 1.5 + half_len, ident.EYE_Y + eh + gap + thick, axes[2]])
  return np.array([-top[0], ident.EYE_Y - eh, 0.0]), top


def _draw_mouth(hx, hy, face, labels, window: tuple[slice, slice], shape: tuple) -> None:
  """Lips, then the mouth's interior onto the face, within their window."""
  a_in, b_in, a_lip, b_lip = shape
  r, c = window
  wx, wface, wlab = hx[r, c], face[r, c], labels[r, c]
  dy = hy[r, c] - np.float32(ident.MOUTH_Y)
  xx, yy = wx * wx, dy * dy
  wlab[wface & (xx * np.float32(1 / a_lip ** 2) + yy * np.float32(1 / b_lip ** 2) < 1)] = LIPS
  if b_in > 0:
    inside = xx * np.float32(1 / a_in ** 2) + yy * np.float32(1 / b_in ** 2) < 1
    wlab[wface & inside] = INSIDE


def label_map(params: Mapping[str, np.ndarray], yaw: float, pitch: float, roll: float,
              tx: float, ty: float, mouth_open: float, mouth_width: float, resolution: int,
              supersample: int) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
  """Material labels and shading of the samples around the head.

  Returns:
    labels (h, w) uint8, shade (h, w) float32 over the sample window `(rows, cols)` of the
    (resolution * ss)^2 grid that holds the head; samples outside it are background.
  """
  p = _f32(params)
  cx = ident.HEAD_CENTRE[0] + float(np.float32(tx)) * ident.ALIGNED_SIZE
  cy = ident.HEAD_CENTRE[1] + float(np.float32(ty)) * ident.ALIGNED_SIZE
  rot = rotation(np.float32(yaw), np.float32(pitch), np.float32(roll))
  frame = _Frame(rot, cx, cy, resolution, supersample)

  axes = p["head_axes"].astype(np.float64)
  scale, lift, _, _ = (float(a) for a in p["hair_style"])
  ny, nw, nh, prot = (float(a) for a in p["nose"])
  nd = prot + 6.0
  nose_c = np.array([0.0, ny, surface_z(axes, 0.0, ny) + prot - nd])
  nose_a = np.array([nw, nh, nd])
  ext = np.stack([_extent(rot, c, a) for c, a in
                  ((np.zeros(3), axes), (np.array([0.0, lift, -2.0]), axes * scale),
                   (nose_c, nose_a))])
  rows, cols = frame.window(np.array([ext[:, 0].min(), ext[:, 1].max(), ext[:, 2].min(),
                                      ext[:, 3].max()]))
  rays = frame.rays(rows, cols)
  shape = (rays.y.shape[0], rays.x.shape[1])
  labels = np.zeros(shape, np.uint8)
  shade = np.ones(shape, np.float32)
  depth = np.full(shape, -np.inf, np.float32)
  (hx, hy, _), face = _draw_hair_and_head(p, rays, axes, labels, shade, depth)

  # Decals on the face, later ones drawn over earlier ones, each evaluated in its own window.
  _draw_eyes(p, hx, hy, face, labels, _decal_window(frame, rot, *_eye_box(p, axes), rows, cols))
  mouth = mouth_shape(float(np.float32(mouth_open)), float(np.float32(mouth_width)))
  a_lip, b_lip = mouth[2:]
  _draw_mouth(hx, hy, face, labels,
              _decal_window(frame, rot, np.array([-a_lip, ident.MOUTH_Y - b_lip, 0.0]),
                            np.array([a_lip, ident.MOUTH_Y + b_lip, axes[2]]), rows, cols),
              mouth)

  # Nose: an ellipsoid sunk into the face, drawn where it stands in front of the head.
  s_nose, _, hit_nose = rays.hit(nose_c, nose_a)
  take = _take(hit_nose, s_nose, depth)
  labels[take] = NOSE
  _shade_where(take, rays, rays.point(s_nose), nose_c, nose_a, shade)
  return labels, shade, (rows, cols)


def _palette(p: Mapping[str, np.ndarray]) -> np.ndarray:
  skin = p["skin"]
  brow = p["brow"][4] * p["hair"] + (1 - p["brow"][4]) * skin * np.float32(0.6)
  return np.stack([np.zeros(3, np.float32), skin, p["hair"], brow, ident.SCLERA, p["iris"],
                   ident.PUPIL, p["lips"], ident.MOUTH_INSIDE,
                   skin * np.array([1.0, 0.97, 0.96], np.float32)]).astype(np.float32)


def _background(p: Mapping[str, np.ndarray], v: np.ndarray) -> np.ndarray:
  t = v * np.float32(1.0 / ident.ALIGNED_SIZE)
  return p["background"] + t[..., None] * (p["background2"] - p["background"])


def render_frame(params: Mapping[str, np.ndarray], yaw: float, pitch: float, roll: float,
                 tx: float, ty: float, mouth_open: float, mouth_width: float,
                 resolution: int, supersample: int | None = None) -> np.ndarray:
  """Draws one frame.

  Args:
    params: identity parameters (`identity.sample_identity`).
    yaw, pitch, roll: head rotation in degrees.
    tx, ty: head shift as a fraction of the image size.
    mouth_open, mouth_width: mouth shape in [0, 1].
    resolution: output size in pixels (square).
    supersample: samples per pixel side; default `default_supersample(resolution)`.

  Returns:
    (resolution, resolution, 3) uint8 RGB.
  """
  ss = supersample or default_supersample(resolution)
  p = _f32(params)
  labels, shade, (rows, cols) = label_map(p, yaw, pitch, roll, tx, ty, mouth_open, mouth_width,
                                          resolution, ss)
  u, v = _grid(resolution, ss)
  colour = _palette(p)[labels] * shade[..., None]
  bg = np.broadcast_to(_background(p, v[rows]), colour.shape)
  colour = np.where((labels == BACKGROUND)[..., None], bg, colour)
  h, w = labels.shape[0] // ss, labels.shape[1] // ss
  # Box filter as a fixed sequence of elementwise adds (no reduction whose order could vary).
  blocks = colour.reshape(h, ss, w, ss, 3)
  total = blocks[:, 0, :, 0]
  for i in range(ss):
    for j in range(ss):
      if i or j:
        total = total + blocks[:, i, :, j]
  colour = total / np.float32(ss * ss)
  pixel_v = ((np.arange(resolution, dtype=np.float64) + 0.5)
             * (ident.ALIGNED_SIZE / resolution)).astype(np.float32)[:, None]
  out = np.broadcast_to(_background(p, pixel_v), (resolution, resolution, 3)).copy()
  out[rows.start // ss:rows.stop // ss, cols.start // ss:cols.stop // ss] = colour
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_frames(params: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
                  resolution: int, supersample: int | None = None) -> np.ndarray:
  """Draws a clip from per-frame truth.

  Args:
    params: identity parameters.
    truth: per-frame arrays with at least yaw, pitch, roll, tx, ty, mouth_open, mouth_width
      (other keys are ignored).
    resolution: output size in pixels.
    supersample: samples per pixel side.

  Returns:
    (T, resolution, resolution, 3) uint8.
  """
  cols = [np.asarray(truth[k], np.float32).reshape(-1) for k in POSE_KEYS + MOUTH_KEYS]
  return np.stack([render_frame(params, *(float(c[t]) for c in cols), resolution=resolution,
                                supersample=supersample) for t in range(len(cols[0]))])
