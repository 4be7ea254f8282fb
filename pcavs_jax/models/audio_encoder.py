"""E_a, the audio encoder of PC-AVS: an SE-ResNet with attentive pooling over time that maps a
mel window into the mouth space (flax.linen, NHWC). Layer names are stable:
`pcavs_jax.convert.map_encoders` maps the official PyTorch checkpoint onto them.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from pcavs_jax.models.layers import Array, Dtype, batch_norm, conv, dense, scaled_channels


class SqueezeExcitation(nn.Module):
  """Channel gate: mean over H, W; Linear c -> c/r, ReLU, Linear -> c, sigmoid; multiply."""

  reduction: int = 8
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    y = jnp.mean(x, axis=(1, 2))
    y = nn.relu(dense(max(1, c // self.reduction), self.dtype, "fc1")(y))
    y = nn.sigmoid(dense(c, self.dtype, "fc2")(y))
    return x * y[:, None, None, :]


class SEBasicBlock(nn.Module):
  """conv3x3(stride)-ReLU-BN, conv3x3-BN, squeeze-excitation, + shortcut, ReLU."""

  channels: int
  stride: int = 1
  downsample: bool = False
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    bn = functools.partial(batch_norm, train, self.dtype, self.bn_axis_name)
    y = conv(self.channels, 3, self.stride, 1, dtype=self.dtype, name="conv1")(x)
    y = bn("bn1")(nn.relu(y))     # official order: ReLU before BN
    y = bn("bn2")(conv(self.channels, 3, 1, 1, dtype=self.dtype, name="conv2")(y))
    y = SqueezeExcitation(dtype=self.dtype, name="se")(y)
    if self.downsample:
      x = conv(self.channels, 1, self.stride, dtype=self.dtype, name="downsample_conv")(x)
      x = bn("downsample_bn")(x)
    return nn.relu(y + x)


class SEResNet(nn.Module):
  """The SE-ResNet trunk of E_a with self-attentive pooling over time (official `ResNetSE`)."""

  width: float = 1.0
  feature_dim: int = 512
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  stage_blocks: tuple[int, ...] = (3, 4, 6, 3)

  @nn.compact
  def __call__(self, mel: Array, train: bool = False) -> Array:
    bn = functools.partial(batch_norm, train, self.dtype, self.bn_axis_name)
    x = mel.astype(self.dtype)
    c0 = scaled_channels(32, self.width)
    x = conv(c0, 3, 1, 1, bias=True, dtype=self.dtype, name="conv1")(x)
    x = bn("bn1")(nn.relu(x))
    in_channels = c0
    for stage, blocks in enumerate(self.stage_blocks):
      channels = scaled_channels(32 * 2**stage, self.width)
      for j in range(blocks):
        stride = 2 if (stage > 0 and j == 0) else 1
        x = SEBasicBlock(channels, stride,
                         downsample=(j == 0 and (stride != 1 or in_channels != channels)),
                         dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                         name=f"layer{stage + 1}_{j}")(x, train)
        in_channels = channels
    # PyTorch reads the (C, H, W) map as (C * H) channels x W time steps, channel index
    # c * H + h: (B, H, W, C) -> (B, W, C, H) -> (B, T = W, C * H).
    b, h, w, c = x.shape
    x = jnp.transpose(x, (0, 2, 3, 1)).reshape(b, w, c * h)
    hidden = scaled_channels(128, self.width)
    a = nn.Conv(hidden, (1,), dtype=self.dtype, param_dtype=jnp.float32, name="attention_conv1")(x)
    a = bn("attention_bn")(nn.relu(a))
    a = nn.Conv(c * h, (1,), dtype=self.dtype, param_dtype=jnp.float32, name="attention_conv2")(a)
    weights = jax.nn.softmax(a.astype(jnp.float32), axis=1).astype(x.dtype)
    x = jnp.sum(x * weights, axis=1)
    return dense(self.feature_dim, self.dtype, "fc")(x)


class AudioEncoder(nn.Module):
  """E_a, the audio content encoder (official `netA_sync`, `ressesync`).

  Attributes:
    width: channel multiplier (1.0 official: 32, 64, 128, 256 channels).
    feature_dim: audio mouth feature size (512 official, the size of E_n's mouth feature).
    num_classes: identity classes of the classification head (official `fc`).
    dtype: compute dtype.
    bn_axis_name: axis over which BatchNorm statistics are averaged.
  """

  width: float = 1.0
  feature_dim: int = 512
  num_classes: int = 5830
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  def setup(self):
    self.se_resnet = SEResNet(width=self.width, feature_dim=self.feature_dim, dtype=self.dtype,
                              bn_axis_name=self.bn_axis_name)
    self.classifier = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)

  def __call__(self, mel: Array, train: bool = False) -> Array:
    """mel (B, 80, 20) or (B, 80, 20, 1) in [0, 1] (mels x hops) -> feature (B, feature_dim)."""
    if mel.ndim == 3:
      mel = mel[..., None]
    feature = self.se_resnet(mel, train)
    if self.is_initializing():
      self.classify(feature)
    return feature

  def classify(self, feature: Array) -> Array:
    """Identity scores from the audio feature (official `fc`)."""
    return self.classifier(feature)
