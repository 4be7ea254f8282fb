"""D, the multi-scale PatchGAN discriminator of PC-AVS (official `multiscale` / `n_layer`).

pix2pixHD / SPADE style: each scale is a PatchGAN whose middle convolutions carry spectral
norm followed by instance norm (`spectralinstance`); the next scale sees the image
average-pooled by 2. Every scale returns its input and all intermediate outputs so the
generator loss can match features. Layout is NHWC.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

Dtype = Any

_NHWC = ("NHWC", "HWIO", "NHWC")


def _l2_normalize(x: jax.Array, eps: float) -> jax.Array:
  # torch.nn.functional.normalize: x / max(||x||, eps).
  return x / jnp.maximum(jnp.linalg.norm(x), eps)


class SpectralConv(nn.Module):
  """Bias-free conv whose kernel is divided by its spectral norm (torch `spectral_norm`).

  State in 'batch_stats': `u` (out,) and `v` (kh*kw*in,), the singular-vector estimates of the
  kernel read as a matrix W (out, kh*kw*in). sigma = u . (W v). With `update_stats=True` one
  power iteration (v = W^T u, u = W v, both normalised) runs first and the new u, v are stored;
  otherwise the stored u, v are used as they are (PyTorch's eval mode).
  """
  features: int
  kernel_size: int = 4
  strides: int = 1
  padding: int = 2
  eps: float = 1e-12
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    w_mat = kernel.reshape(-1, self.features).T                       # (out, kh*kw*in)

    def init_unit(rng, n):
      return _l2_normalize(jax.random.normal(rng, (n,), jnp.float32), self.eps)

    rng = self.make_rng("params") if self.is_initializing() else None
    u_var = self.variable("batch_stats", "u", lambda: init_unit(
        jax.random.fold_in(rng, 0), w_mat.shape[0]))
    v_var = self.variable("batch_stats", "v", lambda: init_unit(
        jax.random.fold_in(rng, 1), w_mat.shape[1]))
    u, v = u_var.value, v_var.value
    if update_stats:
      w_sg = lax.stop_gradient(w_mat)
      v = _l2_normalize(w_sg.T @ u, self.eps)
      u = _l2_normalize(w_sg @ v, self.eps)
      if not self.is_initializing():
        u_var.value, v_var.value = u, v
    sigma = jnp.dot(u, w_mat @ v)
    w = (kernel / sigma).astype(self.dtype)
    return lax.conv_general_dilated(
        pad_spatial(x.astype(self.dtype), self.padding), w,
        window_strides=(self.strides, self.strides), padding="VALID", dimension_numbers=_NHWC)


def pad_spatial(x: jax.Array, p: int) -> jax.Array:
  """Zero-pads H and W by `p` on both sides.

  The D convs pad 2 around a 4x4 kernel, so their outputs are larger than their inputs. Given
  that padding inside the convolution, XLA:CPU computes the kernel gradient on a path that is
  more than 10x slower (seconds per step at 64 px); padding first keeps it on the fast path.
  """
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Instance norm without affine parameters (per sample and channel, biased variance)."""
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(xf - mean), axis=(1, 2), keepdims=True)
  return ((xf - mean) * lax.rsqrt(var + eps)).astype(x.dtype)


class NLayerDiscriminator(nn.Module):
  """One PatchGAN scale.

  conv 4x4/2 (bias) + LReLU 0.2; `num_layers - 1` blocks of spectral-norm conv 4x4 (stride 2,
  the last stride 1; channels doubling up to 512) + instance norm + LReLU 0.2; conv 4x4/1 to
  one logit map. All convs pad 2.
  """
  num_layers: int = 4
  base_channels: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    """Returns [x, out0, ..., out_{num_layers-1}, logits], NHWC."""
    outs = [x]
    nf = self.base_channels
    h = nn.Conv(nf, (4, 4), strides=(2, 2), padding="VALID", dtype=self.dtype,
                name="model0")(pad_spatial(x.astype(self.dtype), 2))
    h = nn.leaky_relu(h, 0.2)
    outs.append(h)
    for n in range(1, self.num_layers):
      nf = min(nf * 2, 512)
      stride = 1 if n == self.num_layers - 1 else 2
      h = SpectralConv(nf, 4, strides=stride, padding=2, dtype=self.dtype,
                       name=f"model{n}")(h, update_stats=train)
      h = nn.leaky_relu(instance_norm(h), 0.2)
      outs.append(h)
    h = nn.Conv(1, (4, 4), strides=(1, 1), padding="VALID", dtype=self.dtype,
                name=f"model{self.num_layers}")(pad_spatial(h, 2))
    outs.append(h)
    return outs


def downsample(x: jax.Array) -> jax.Array:
  """3x3 average pool, stride 2, pad 1, padding excluded from the mean."""
  return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


class MultiscaleDiscriminator(nn.Module):
  """D [netD, `multiscale`]: `num_scales` PatchGANs on successively 2x-downsampled images.

  Attributes:
    num_scales: number of PatchGANs (2 official).
    num_layers: convs with stride 2 / norm per PatchGAN, as `n_layers_D` (4 official).
    base_channels: channels of the first conv (`ndf`, 64 official).
    dtype: compute dtype; parameters, spectral-norm state and instance-norm statistics stay
      float32.
  """
  num_scales: int = 2
  num_layers: int = 4
  base_channels: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> list[list[jax.Array]]:
    """Scores images.

    Args:
      images: (B, H, W, 3) in [-1, 1].
      train: run one spectral-norm power iteration and store it (needs
        `mutable=['batch_stats']`).

    Returns:
      Per scale, [image at that scale, out0, ..., out_{num_layers-1}, logits], all NHWC
      float32.
    """
    results = []
    x = images.astype(jnp.float32)
    for i in range(self.num_scales):
      outs = NLayerDiscriminator(self.num_layers, self.base_channels, dtype=self.dtype,
                                 name=f"discriminator_{i}")(x, train=train)
      results.append([o.astype(jnp.float32) for o in outs])
      if i + 1 < self.num_scales:
        x = downsample(x)
    return results
