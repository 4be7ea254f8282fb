"""E_i, the identity encoder of PC-AVS: ResNeXt-50 32x4d giving the identity vector, the identity
map and the identity scores (flax.linen, NHWC). Layer names are stable:
`pcavs_jax.convert.map_encoders` maps the official PyTorch checkpoint onto them.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from pcavs_jax.models.layers import (Array, Dtype, adaptive_avg_pool, batch_norm, conv, dense,
                                     scaled_channels, symmetric_padding, use_dense_conv_grads)


class ResNeXtBottleneck(nn.Module):
  """torchvision Bottleneck: 1x1, grouped 3x3 (stride), 1x1 expansion, residual, ReLU."""

  width: int           # channels of the grouped 3x3 conv
  out_channels: int
  groups: int
  stride: int = 1
  downsample: bool = False
  dense_grads: bool = False   # the grouped 3x3's gradients in block-diagonal dense form
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    bn = functools.partial(batch_norm, train, self.dtype, self.bn_axis_name)
    y = conv(self.width, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(bn("bn1")(y))
    y = conv(self.width, 3, self.stride, 1, groups=self.groups, dense_grads=self.dense_grads,
              dtype=self.dtype, name="conv2")(y)
    y = nn.relu(bn("bn2")(y))
    y = conv(self.out_channels, 1, dtype=self.dtype, name="conv3")(y)
    y = bn("bn3")(y)
    if self.downsample:
      x = conv(self.out_channels, 1, self.stride, dtype=self.dtype, name="downsample_conv")(x)
      x = bn("downsample_bn")(x)
    return nn.relu(y + x)


class IdentityEncoder(nn.Module):
  """E_i, the identity encoder: ResNeXt-50 32x4d (official `netV`, `resnext`).

  Images are used as given (in [-1, 1]); the official network does not renormalise them.
  Outputs are per image: averaging over several reference images is the caller's job.

  Attributes:
    width: channel multiplier (1.0 official). Groups scale with it (32 at 1.0), so layer1
      keeps 4 channels per group.
    num_classes: identity classes of the classification head `fc`.
    map_size: side of the identity map handed to the generator.
    map_channels: channels of the identity map (the 1x1 conv after layer4).
    grouped_conv_grads: how the grouped 3x3 convs' gradients are computed: 'native', 'dense'
      (`grouped_conv_dense_grads`: same numbers, much faster on CPU) or 'auto' (dense on the
      CPU backend).
    dtype: compute dtype.
    bn_axis_name: pmap/shard_map axis over which BatchNorm statistics are averaged.
  """

  width: float = 1.0
  num_classes: int = 5830
  map_size: int = 7
  map_channels: int = 512
  grouped_conv_grads: str = "auto"
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  stage_blocks: tuple[int, ...] = (3, 4, 6, 3)

  @nn.compact
  def __call__(self, images: Array, train: bool = False) -> dict[str, Array]:
    """images (B, H, W, 3) -> {id_vector (B, 2048 w), id_map (B, s, s, C), class_scores}."""
    x = images.astype(self.dtype)
    stem = scaled_channels(64, self.width)
    x = conv(stem, 7, 2, 3, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(batch_norm(train, self.dtype, self.bn_axis_name, "bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=symmetric_padding(1))
    in_channels = stem
    # 32x4d: 32 groups in every stage, 4 channels each in layer1 (torchvision's
    # width_per_group=4), doubling per stage. With `width` the group count scales so
    # that layer1 keeps 4 channels per group.
    groups = max(1, scaled_channels(64, self.width) * 2 // 4)
    dense_grads = use_dense_conv_grads(self.grouped_conv_grads)
    for stage, blocks in enumerate(self.stage_blocks):
      planes = scaled_channels(64 * 2**stage, self.width)
      width, out_channels = 2 * planes, 4 * planes
      while width % groups:   # only for odd widths; official sizes divide evenly
        groups -= 1
      for j in range(blocks):
        stride = 2 if (stage > 0 and j == 0) else 1
        x = ResNeXtBottleneck(
            width=width, out_channels=out_channels, groups=groups, stride=stride,
            downsample=(j == 0 and (stride != 1 or in_channels != out_channels)),
            dense_grads=dense_grads, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
            name=f"layer{stage + 1}_{j}")(x, train)
        in_channels = out_channels
    id_vector = jnp.mean(x, axis=(1, 2))
    id_map = conv(self.map_channels, 1, bias=True, dtype=self.dtype, name="conv1x1")(x)
    id_map = adaptive_avg_pool(id_map, (self.map_size, self.map_size))
    class_scores = dense(self.num_classes, self.dtype, "fc")(id_vector)
    return {"id_vector": id_vector, "id_map": id_map, "class_scores": class_scores}
