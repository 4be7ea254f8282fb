"""Layers the three PC-AVS encoders share (flax.linen, NHWC): PyTorch-style conv, dense and
batch norm, PyTorch's adaptive average pooling and bilinear resize as matrices, and the grouped
conv whose gradients take the block-diagonal dense form (fast on CPU).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST


def scaled_channels(channels: int, width: float, multiple: int = 1) -> int:
  """`channels * width` rounded to a positive multiple of `multiple`."""
  c = int(round(channels * width / multiple)) * multiple
  return max(multiple, c)


def symmetric_padding(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((p, p), (p, p))


def adaptive_avg_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) averaging matrix of PyTorch's AdaptiveAvgPool along one axis.

  Bin i covers [floor(i * in / out), ceil((i + 1) * in / out)); when out > in the bins
  repeat input pixels, which is how the official code "pools" a 2x2 map to 7x7.
  """
  m = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)
    m[i, start:end] = 1.0 / (end - start)
  return m


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) interpolation matrix of PyTorch's bilinear resize, `align_corners=False`.

  Source coordinate (i + 0.5) * in / out - 0.5, clamped at 0 below; the right neighbour is
  clamped to the last pixel. Works for any size ratio (the hourglass upsamples 3 -> 7).
  """
  m = np.zeros((out_size, in_size), np.float32)
  scale = in_size / out_size
  for i in range(out_size):
    src = max((i + 0.5) * scale - 0.5, 0.0)
    i0 = min(int(np.floor(src)), in_size - 1)
    i1 = min(i0 + 1, in_size - 1)
    frac = src - i0
    m[i, i0] += 1.0 - frac
    m[i, i1] += frac
  return m


def _apply_separable(x: Array, mh: np.ndarray, mw: np.ndarray) -> Array:
  """Applies per-axis (out, in) matrices to the H and W axes of an NHWC array."""
  mh = jnp.asarray(mh, x.dtype)
  mw = jnp.asarray(mw, x.dtype)
  x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=_HIGHEST)
  return jnp.einsum("pw,bowc->bopc", mw, x, precision=_HIGHEST)


def adaptive_avg_pool(x: Array, size: tuple[int, int]) -> Array:
  """PyTorch `adaptive_avg_pool2d` on NHWC."""
  return _apply_separable(x, adaptive_avg_pool_matrix(x.shape[1], size[0]),
                          adaptive_avg_pool_matrix(x.shape[2], size[1]))


def bilinear_resize(x: Array, size: tuple[int, int]) -> Array:
  """PyTorch `interpolate(mode='bilinear', align_corners=False)` to `size` on NHWC."""
  return _apply_separable(x, bilinear_matrix(x.shape[1], size[0]),
                          bilinear_matrix(x.shape[2], size[1]))


BN_MOMENTUM = 0.9   # flax's running-average momentum: PyTorch's default momentum of 0.1


def batch_norm(train: bool, dtype: Dtype, axis_name: str | None, name: str) -> nn.BatchNorm:
  """PyTorch's BatchNorm2d defaults (`BN_MOMENTUM`, epsilon 1e-5), float32 parameters."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5,
                      axis_name=axis_name, dtype=dtype, param_dtype=jnp.float32, name=name)


GROUPED_CONV_GRADIENTS = ("auto", "native", "dense")


def block_diagonal_conv(lhs: Array, rhs: Array, window_strides, padding, *,
                        feature_group_count: int = 1, dimension_numbers=None, **kwargs) -> Array:
  """`lax.conv_general_dilated` computing a grouped conv as one dense conv.

  The grouped kernel (in / groups input channels) is expanded to a block-diagonal dense kernel
  with zeros between groups, so the result is the grouped conv's at `groups` times the
  multiply-adds.
  """
  g = feature_group_count
  if g > 1:
    dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    out_axis, in_axis = dn.rhs_spec[:2]
    w = jnp.moveaxis(rhs, (in_axis, out_axis), (-2, -1))            # (..., in / g, out)
    in_g, out = w.shape[-2:]
    w = w.reshape(w.shape[:-1] + (g, out // g))                      # (..., in / g, g, out / g)
    w = jnp.einsum("...igo,hg->...higo", w, jnp.eye(g, dtype=w.dtype))
    w = w.reshape(w.shape[:-4] + (g * in_g, out))
    rhs = jnp.moveaxis(w, (-2, -1), (in_axis, out_axis))
  return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding,
                                      dimension_numbers=dimension_numbers, **kwargs)


def grouped_conv_dense_grads(lhs: Array, rhs: Array, window_strides, padding, *,
                             feature_group_count: int = 1, **kwargs) -> Array:
  """A grouped `lax.conv_general_dilated` whose gradients are those of `block_diagonal_conv`.

  XLA's CPU backend computes grouped-conv gradients 10-40x slower than those of the equivalent
  block-diagonal dense conv (ResNeXt-50's layer1 conv at 56x56, 8 images, forward and
  backward: 6.7 s against 0.18 s), while its grouped forward is the faster one (whole E_i at
  224 px: 182 ms against 487 ms). So the forward stays grouped and the backward is the dense
  form's, which gives the same gradients.
  """
  conv = functools.partial(jax.lax.conv_general_dilated, window_strides=window_strides,
                           padding=padding, feature_group_count=feature_group_count, **kwargs)
  dense = functools.partial(block_diagonal_conv, window_strides=window_strides, padding=padding,
                            feature_group_count=feature_group_count, **kwargs)

  @jax.custom_vjp
  def f(lhs, rhs):
    return conv(lhs, rhs)

  def f_fwd(lhs, rhs):
    return conv(lhs, rhs), (lhs, rhs)

  def f_bwd(res, cotangent):
    return jax.vjp(dense, *res)[1](cotangent)

  f.defvjp(f_fwd, f_bwd)
  return f(lhs, rhs)


def use_dense_conv_grads(mode: str) -> bool:
  """Whether grouped convs take `grouped_conv_dense_grads`: mode 'dense', or 'auto' on CPU."""
  if mode not in GROUPED_CONV_GRADIENTS:
    raise ValueError(f"grouped_conv_grads must be one of {GROUPED_CONV_GRADIENTS}, got {mode!r}")
  return mode == "dense" or (mode == "auto" and jax.default_backend() == "cpu")


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = False,
         groups: int = 1, dense_grads: bool = False, dtype: Dtype = jnp.float32,
         name: str | None = None) -> nn.Conv:
  """A PyTorch-style conv: square kernel, symmetric padding, no bias unless asked."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=symmetric_padding(padding), use_bias=bias, feature_group_count=groups,
                 dtype=dtype, param_dtype=jnp.float32, name=name,
                 conv_general_dilated=(grouped_conv_dense_grads if dense_grads and groups > 1
                                       else None))


def dense(features: int, dtype: Dtype, name: str) -> nn.Dense:
  """A Linear layer with float32 parameters."""
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)


class MLP(nn.Module):
  """Linear -> ReLU -> Linear (the official `to_mouth`, `to_headpose`, `classifier`)."""

  hidden: int
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.relu(dense(self.hidden, self.dtype, "fc1")(x))
    return dense(self.features, self.dtype, "fc2")(x)


class ReluDense(nn.Module):
  """ReLU -> Linear (the official `mouth_embed`, `headpose_embed`, `*_fc` heads)."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return dense(self.features, self.dtype, "fc")(nn.relu(x))
