"""VGG19 feature extractor (relu1_1 .. relu5_1) for the perceptual loss.

ImageNet VGG19 weights cannot be downloaded here: `pcavs_jax.convert.vgg.load_vgg19_weights` reads a
file the user gives. Only the 13 convolutions up to relu5_1 are used.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = dict

# (flax name, torchvision `features` index, in channels, out channels); a 2x2 max-pool precedes
# the first conv of blocks 2..5.
VGG19_CONVS: tuple[tuple[str, int, int, int], ...] = (
    ("conv1_1", 0, 3, 64),
    ("conv1_2", 2, 64, 64),
    ("conv2_1", 5, 64, 128),
    ("conv2_2", 7, 128, 128),
    ("conv3_1", 10, 128, 256),
    ("conv3_2", 12, 256, 256),
    ("conv3_3", 14, 256, 256),
    ("conv3_4", 16, 256, 256),
    ("conv4_1", 19, 256, 512),
    ("conv4_2", 21, 512, 512),
    ("conv4_3", 23, 512, 512),
    ("conv4_4", 25, 512, 512),
    ("conv5_1", 28, 512, 512),
)
# The official slices end at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
FEATURE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
PERCEPTUAL_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19(nn.Module):
  """VGG19 convolutions up to relu5_1; returns [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1].

  Input: NHWC images already normalised the way the weights expect (ImageNet mean / std for
  torchvision's). See `perceptual_loss` for the [-1, 1] -> ImageNet mapping.

  Attributes:
    dtype: compute dtype.
  """

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    features = []
    for name, _, _, out_channels in VGG19_CONVS:
      if name.endswith("_1") and name != "conv1_1":
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      x = nn.Conv(out_channels, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                  param_dtype=jnp.float32, name=name)(x)
      x = nn.relu(x)
      if name in FEATURE_LAYERS:
        features.append(x)
    return features


def imagenet_normalize(images: Array) -> Array:
  """Maps NHWC images in [-1, 1] to ImageNet-normalised inputs ((x+1)/2 - mean) / std."""
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return ((images + 1.0) * 0.5 - mean) / std


def perceptual_loss(vgg_params: Params, fake: Array, real: Array,
                    weights: Sequence[float] = PERCEPTUAL_WEIGHTS, normalize: bool = True,
                    dtype: jnp.dtype = jnp.float32) -> Array:
  """VGG perceptual loss: sum over relu1_1..relu5_1 of weight x L1(VGG(fake), VGG(real)).

  The real side and the VGG weights get no gradient. The official code feeds its [-1, 1] images to
  VGG19 as they are; `normalize=True` (the default here) first maps them to the ImageNet statistics
  the torchvision weights were trained with, `normalize=False` reproduces the official input.

  Args:
    vgg_params: from `pcavs_jax.convert.vgg.load_vgg19_weights`.
    fake: NHWC generated images in [-1, 1].
    real: NHWC target images, same shape.
    weights: per-layer weights (1/32, 1/16, 1/8, 1/4, 1 official).
    normalize: map [-1, 1] to ImageNet mean / std first.
    dtype: VGG compute dtype.

  Returns:
    the scalar loss (unweighted by lambda_vgg).
  """
  if fake.shape != real.shape:
    raise ValueError(f"fake {fake.shape} and real {real.shape} differ")
  x = jnp.concatenate([fake, jax.lax.stop_gradient(real)], axis=0)
  if normalize:
    x = imagenet_normalize(x)
  feats = VGG19(dtype=dtype).apply({"params": jax.lax.stop_gradient(vgg_params)}, x)
  n = fake.shape[0]
  loss = jnp.zeros((), jnp.float32)
  for w, f in zip(weights, feats):
    f = f.astype(jnp.float32)
    loss = loss + w * jnp.mean(jnp.abs(f[:n] - jax.lax.stop_gradient(f[n:])))
  return loss
