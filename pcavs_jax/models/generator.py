"""G, the StyleGAN2-style generator of PC-AVS (official `ModulateGenerator`).

One style vector (identity 2048 + mouth 500 + pose code 12 = 2560 in the official model)
modulates every layer; synthesis starts from E_i's spatial identity map instead of a learned
constant. All layers use the equalised learning rate: weights are stored unscaled and
multiplied by 1/sqrt(fan_in) at run time. Layout is NHWC.

Modulated convolutions use the efficient batched form: the modulation scales the input
activations, one ordinary convolution runs on the whole batch with the shared weight, and the
demodulation factor scales the outputs. This is exactly the per-sample weight form of
StyleGAN2 (the convolution is linear in each input and output channel), without building
B separate kernels.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

Dtype = Any

# StyleGAN2's FIR filter [1, 3, 3, 1] (outer product, normalised to sum 1), times
# factor**2 = 4 wherever it follows a 2x upsampling, as in the official code.
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
_NHWC = ("NHWC", "HWIO", "NHWC")
_DEMOD_EPS = 1e-8


def blur_kernel(gain: float = 4.0) -> np.ndarray:
  """The 4x4 FIR kernel outer([1,3,3,1]) / 64 * gain."""
  k = np.asarray(BLUR_TAPS, np.float32)
  return (np.outer(k, k) / np.float32(64.0) * np.float32(gain)).astype(np.float32)


def leaky_relu_gain(x: jax.Array, slope: float = 0.2) -> jax.Array:
  """Leaky ReLU times sqrt(2) (StyleGAN2's `fused_leaky_relu` without its bias)."""
  return jnp.where(x >= 0, x, x * slope) * jnp.asarray(math.sqrt(2.0), x.dtype)


def start_size(resolution: int) -> int:
  """Synthesis start size: `resolution` halved until it is <= 7 (224 -> 7, 64 -> 4, 56 -> 7)."""
  size = resolution
  while size > 7:
    if size % 2:
      raise ValueError(f"resolution {resolution} does not halve evenly down to <= 7")
    size //= 2
  return size


def generator_channels(resolution: int, width: float = 1.0) -> list[tuple[int, int]]:
  """[(size, channels)] from the start size up to `resolution`.

  Counted from the end: full resolution 128, the one before 256, all earlier 512 (official
  224: 7..224 -> 512, 512, 512, 512, 256, 128), each times `width`, at least 8.
  """
  sizes = [start_size(resolution)]
  while sizes[-1] < resolution:
    sizes.append(sizes[-1] * 2)
  base = [512] * len(sizes)
  base[-1] = 128
  if len(sizes) >= 2:
    base[-2] = 256
  return [(s, max(8, int(round(c * width)))) for s, c in zip(sizes, base)]


def _fir_taps() -> np.ndarray:
  """The 1-D factor f of the blur kernel: outer(f, f) = outer([1,3,3,1]) / 64 * 4."""
  return np.array([1.0, 3.0, 3.0, 1.0], np.float32) / 4.0


def upconv_blur(x: jax.Array, w: jax.Array) -> jax.Array:
  """The official up-convolution: conv_transpose2d(x, w, stride 2) then the blur with pads (1, 1).

  Computed exactly as one ordinary 3x3 convolution with 4x the output channels (one set per
  output pixel phase) and a pixel shuffle: no dilated input, no depthwise filter, which are slow
  paths on CPU and waste 3/4 of the work on inserted zeros.

  Args:
    x: (B, H, W, in).
    w: (3, 3, in, out), the transposed conv's taps as stored (w[k] feeds out[2i + k]).

  Returns:
    (B, 2H, 2W, out).
  """
  f = _fir_taps()
  full = np.zeros((6, 3), np.float32)            # full[e, k] = f[e - k]
  for k in range(3):
    full[k:k + 4, k] = f
  fused = jnp.einsum("yk,xl,klio->yxio", full, full, w.astype(jnp.float32))  # (6, 6, in, out)
  # Per axis, out[2j + a] = sum_p x[j + p - 1] * fused[a + 4 - 2p] (phase a, input tap p).
  rows = np.arange(2)[:, None] + 4 - 2 * np.arange(3)[None, :]   # (2 phases, 3 taps)
  # kernel[p, q, i, (a, b, o)] = fused[rows[a, p], rows[b, q], i, o]
  k = fused[rows[:, :, None, None], rows[None, None, :, :]]       # (a, p, b, q, in, out)
  k = jnp.transpose(k, (1, 3, 4, 0, 2, 5))                        # (p, q, in, a, b, out)
  cin, cout = w.shape[2], w.shape[3]
  k = k.reshape(3, 3, cin, 4 * cout).astype(x.dtype)
  y = lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC)
  b, h, wd, _ = y.shape
  y = y.reshape(b, h, wd, 2, 2, cout)
  return jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * wd, cout)


def upsample_rgb(x: jax.Array) -> jax.Array:
  """Zero-insertion 2x upsampling then the blur (gain 4, pads (2, 1)): upfirdn2d(x, up=2).

  Per axis this is out[2j] = (x[j-1] + 3 x[j]) / 4, out[2j+1] = (3 x[j] + x[j+1]) / 4 with
  zeros beyond the border, computed by slicing.
  """
  def along(v, axis):
    n = v.shape[axis]
    pad = [(0, 0)] * v.ndim
    pad[axis] = (1, 1)
    vp = jnp.pad(v, pad)
    prev = lax.slice_in_dim(vp, 0, n, axis=axis)
    nxt = lax.slice_in_dim(vp, 2, n + 2, axis=axis)
    even = 0.25 * prev + 0.75 * v
    odd = 0.75 * v + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(v.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)
  return along(along(x, 1), 2)


class EqualLinear(nn.Module):
  """Linear layer with equalised learning rate: y = x @ (W / sqrt(in)) + b."""
  features: int
  bias_init: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
    scale = 1.0 / math.sqrt(x.shape[-1])
    y = jnp.dot(x.astype(self.dtype), (kernel * scale).astype(self.dtype))
    return y + bias.astype(self.dtype)


class ModulatedConv(nn.Module):
  """StyleGAN2 modulated convolution in the batched efficient form.

  `upsample=True` is the official up-convolution: a stride-2 transposed convolution with
  the stored weight, then the blur with pads (1, 1) (see `upconv_blur`).

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    demodulate: divide each output channel by the norm of its modulated weight.
    upsample: 2x up-convolution.
    dtype: compute dtype of the convolution (modulation and demodulation stay float32).
  """
  features: int
  kernel_size: int = 3
  demodulate: bool = True
  upsample: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
    in_ch = x.shape[-1]
    k = self.kernel_size
    # Stored like a conv kernel (kh, kw, in, out), unscaled (equalised lr).
    kernel = self.param("kernel", nn.initializers.normal(1.0), (k, k, in_ch, self.features))
    scale = 1.0 / math.sqrt(in_ch * k * k)
    s = EqualLinear(in_ch, bias_init=1.0, dtype=jnp.float32, name="modulation")(
        style.astype(jnp.float32))                                        # (B, in)

    w = (kernel * scale).astype(self.dtype)
    h = x.astype(self.dtype) * s.astype(self.dtype)[:, None, None, :]
    if self.upsample:
      if k != 3:
        raise ValueError(f"the up-convolution is defined for 3x3 kernels, got {k}x{k}")
      h = upconv_blur(h, w)  # the blur commutes with the per-channel demodulation below
    else:
      p = k // 2
      h = lax.conv_general_dilated(
          h, w, window_strides=(1, 1), padding=((p, p), (p, p)), dimension_numbers=_NHWC)

    if self.demodulate:
      # sum_{i,kh,kw} (scale * w[kh,kw,i,o] * s[b,i])^2 = (s^2) @ (scale^2 * sum_k w^2).
      wsq = jnp.sum(jnp.square(kernel * scale), axis=(0, 1))                # (in, out)
      demod = lax.rsqrt(jnp.dot(jnp.square(s), wsq) + _DEMOD_EPS)          # (B, out)
      h = h * demod.astype(h.dtype)[:, None, None, :]
    return h


class NoiseInjection(nn.Module):
  """Adds learned-scale N(0, 1) noise (one map per sample, shared across channels).

  The noise is drawn from the 'noise' rng stream when the caller provides one; without it
  the layer adds nothing (deterministic generation).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", nn.initializers.zeros, ())
    if not self.has_rng("noise"):
      return x
    noise = jax.random.normal(self.make_rng("noise"), x.shape[:-1] + (1,), jnp.float32)
    return x + (weight * noise).astype(x.dtype)


class StyledConv(nn.Module):
  """Modulated conv, noise injection, bias, leaky ReLU 0.2 times sqrt(2)."""
  features: int
  kernel_size: int = 3
  upsample: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
    h = ModulatedConv(self.features, self.kernel_size, demodulate=True, upsample=self.upsample,
                      dtype=self.dtype, name="conv")(x, style)
    h = NoiseInjection(name="noise")(h)
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return leaky_relu_gain(h + bias.astype(h.dtype))


class ToRGB(nn.Module):
  """1x1 modulated conv to RGB (no demodulation) + bias, plus the 2x-upsampled previous RGB."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, style: jax.Array,
               skip: jax.Array | None = None) -> jax.Array:
    rgb = ModulatedConv(3, 1, demodulate=False, dtype=self.dtype, name="conv")(x, style)
    bias = self.param("bias", nn.initializers.zeros, (3,))
    # The 3-channel RGB path is cheap: keep it in float32.
    rgb = rgb.astype(jnp.float32) + bias
    if skip is not None:
      rgb = rgb + upsample_rgb(skip)
    return rgb


class Generator(nn.Module):
  """G [netG, `modulate`]: identity map + style -> image in [-1, 1].

  Attributes:
    resolution: output size (224 official; 64 / 56 for small configs).
    width: channel multiplier (1.0 official).
    style_dim: length of the style vector (2048 + 500 + 12 = 2560 official).
    dtype: compute dtype; parameters stay float32.
  """
  resolution: int = 224
  width: float = 1.0
  style_dim: int = 2560
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, style: jax.Array, identity_map: jax.Array,
               train: bool = False) -> jax.Array:
    """Draws frames.

    Args:
      style: (B, style_dim) style vector.
      identity_map: (B, s, s, C0) identity map at the start size s with its channels C0.
      train: unused (noise is controlled by the presence of a 'noise' rng); kept for a
        uniform network interface.

    Returns:
      (B, resolution, resolution, 3) float32 image in [-1, 1].
    """
    del train
    chans = generator_channels(self.resolution, self.width)
    s0, c0 = chans[0]
    if style.shape[-1] != self.style_dim:
      raise ValueError(f"style has {style.shape[-1]} features, expected {self.style_dim}")
    if identity_map.shape[1:] != (s0, s0, c0):
      raise ValueError(f"identity_map has shape {identity_map.shape[1:]}, "
                       f"expected {(s0, s0, c0)}")
    h = StyledConv(c0, 3, dtype=self.dtype, name="conv1")(identity_map, style)
    rgb = ToRGB(dtype=self.dtype, name="to_rgb1")(h, style)
    for i, (_, c) in enumerate(chans[1:]):
      h = StyledConv(c, 3, upsample=True, dtype=self.dtype, name=f"convs_{2 * i}")(h, style)
      h = StyledConv(c, 3, dtype=self.dtype, name=f"convs_{2 * i + 1}")(h, style)
      rgb = ToRGB(dtype=self.dtype, name=f"to_rgbs_{i}")(h, style, rgb)
    return jnp.tanh(rgb)
