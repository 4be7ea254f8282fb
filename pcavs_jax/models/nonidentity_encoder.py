"""E_n, the non-identity encoder of PC-AVS: a one-stack FAN hourglass plus the mouth and head-pose
mappers that split its feature into a mouth feature and the implicit pose code (flax.linen,
NHWC). Layer names are stable: `pcavs_jax.convert.map_encoders` maps the official PyTorch
checkpoint onto them.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from pcavs_jax.models.layers import (MLP, Array, Dtype, ReluDense, batch_norm, bilinear_resize,
                                     conv, dense, scaled_channels, symmetric_padding)

# ITU-R BT.601 luma weights of (R, G, B): a pixel's luminance.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class ConvBlock(nn.Module):
  """FAN's pre-activation block: three BN-ReLU-conv3x3 (out/2, out/4, out/4), concatenated.

  The input joins through BN-ReLU-conv1x1 when the channel count changes. No conv biases.
  """

  out_channels: int
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    bn = functools.partial(batch_norm, train, self.dtype, self.bn_axis_name)
    half, quarter = self.out_channels // 2, self.out_channels // 4
    h1 = conv(half, 3, 1, 1, dtype=self.dtype, name="conv1")(nn.relu(bn("bn1")(x)))
    h2 = conv(quarter, 3, 1, 1, dtype=self.dtype, name="conv2")(nn.relu(bn("bn2")(h1)))
    h3 = conv(quarter, 3, 1, 1, dtype=self.dtype, name="conv3")(nn.relu(bn("bn3")(h2)))
    out = jnp.concatenate([h1, h2, h3], axis=-1)
    if x.shape[-1] != self.out_channels:
      x = nn.relu(bn("downsample_bn")(x))
      x = conv(self.out_channels, 1, dtype=self.dtype, name="downsample_conv")(x)
    return out + x


class Hourglass(nn.Module):
  """FAN hourglass with dropout on the upper branch and bilinear upsampling of the lower.

  Blocks are named as the official ones: `b1_<level>`, `b2_<level>`, `b2_plus_1`, `b3_<level>`.
  """

  depth: int
  features: int
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  def _block(self, name: str) -> ConvBlock:
    return ConvBlock(self.features, dtype=self.dtype, bn_axis_name=self.bn_axis_name, name=name)

  def _level(self, level: int, x: Array, train: bool) -> Array:
    up = self._block(f"b1_{level}")(x, train)
    up = nn.Dropout(self.dropout_rate, deterministic=not train)(up)
    low = nn.max_pool(x, (2, 2), strides=(2, 2))
    low = self._block(f"b2_{level}")(low, train)
    if level > 1:
      low = self._level(level - 1, low, train)
    else:
      low = self._block(f"b2_plus_{level}")(low, train)
    low = self._block(f"b3_{level}")(low, train)
    return up + bilinear_resize(low, up.shape[1:3])

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    return self._level(self.depth, x, train)


def hourglass_depth(size: int, max_depth: int = 4) -> int:
  """Levels an hourglass on a `size` x `size` map can have (each halves it, floor; >= 1 px).

  The hourglass sees resolution / 4: 56 (official 224) and 16 (64 px) allow the official 4
  levels; 14 (56 px) allows only 3 (14, 7, 3, 1).
  """
  depth = 0
  while depth < max_depth and size // 2 >= 1:
    size //= 2
    depth += 1
  return depth


class FAN(nn.Module):
  """The one-stack FAN trunk of E_n (official `FAN_use`): image -> feature (B, feature_dim)."""

  width: float = 1.0
  feature_dim: int = 512
  num_landmarks: int = 68
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, images: Array, train: bool = False) -> Array:
    bn = functools.partial(batch_norm, train, self.dtype, self.bn_axis_name)
    block = functools.partial(ConvBlock, dtype=self.dtype, bn_axis_name=self.bn_axis_name)
    c64, c128, c256 = (scaled_channels(c, self.width, 4) for c in (64, 128, 256))
    x = images.astype(self.dtype)
    x = conv(c64, 7, 2, 3, bias=True, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(bn("bn1")(x))
    x = block(c128, name="conv2")(x, train)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = block(c128, name="conv3")(x, train)
    x = block(c256, name="conv4")(x, train)
    x = Hourglass(hourglass_depth(min(x.shape[1:3])), c256, dropout_rate=self.dropout_rate,
                  dtype=self.dtype,
                  bn_axis_name=self.bn_axis_name, name="hourglass")(x, train)
    x = block(c256, name="top_block")(x, train)
    x = bn("bn_end")(conv(c256, 1, bias=True, dtype=self.dtype, name="conv_last")(x))
    x = conv(self.num_landmarks, 1, bias=True, dtype=self.dtype, name="heatmaps")(nn.relu(x))
    x = nn.relu(bn("heatmap_bn")(x))
    x = conv(1, 3, 2, 1, bias=True, dtype=self.dtype, name="conv_out")(x)
    x = nn.relu(x.reshape(x.shape[0], -1))      # (B, (resolution / 8)^2)
    return dense(self.feature_dim, self.dtype, "fc")(x)


class NonIdentityEncoder(nn.Module):
  """E_n, the non-identity encoder (official `netE`, `fan`) with its mouth / head-pose heads.

  Images are used as given (in [-1, 1]). In training the hourglass uses dropout 0.5 and
  needs an rng named 'dropout'.

  Attributes:
    width: channel multiplier of the FAN trunk (1.0 official); the 68 heatmaps stay.
    feature_dim: non-identity feature size, also the width of the mappers (512 official).
    mouth_dim: mouth embedding size (style part; 500 official = 512 - pose_dim).
    pose_dim: pose code size (12 official).
    num_classes: identity classes of the classification heads.
    clip_len: frames whose features `classify_mouth` / `classify_pose` take together.
    resolution: input side; the trunk's final linear layer takes (resolution / 8)^2 inputs.
      Below 64 px the hourglass has fewer than 4 levels (3 at 56 px), see `hourglass_depth`.
    hourglass_dropout: dropout on the hourglass's upper branches in training (0.5 official).
    grayscale: read only the luminance of the frames (off officially), so colours, which belong
      to the identity, cannot pass into the pose code or the mouth feature.
    dtype: compute dtype.
    bn_axis_name: axis over which BatchNorm statistics are averaged.
  """

  width: float = 1.0
  feature_dim: int = 512
  mouth_dim: int = 500
  pose_dim: int = 12
  num_classes: int = 5830
  clip_len: int = 1
  resolution: int = 224
  hourglass_dropout: float = 0.5
  grayscale: bool = False
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  def setup(self):
    d = self.feature_dim
    self.fan = FAN(width=self.width, feature_dim=d, dropout_rate=self.hourglass_dropout,
                   dtype=self.dtype,
                   bn_axis_name=self.bn_axis_name)
    self.classifier = MLP(d, self.num_classes, dtype=self.dtype)
    self.to_mouth = MLP(d, d, dtype=self.dtype)
    self.mouth_embed = ReluDense(self.mouth_dim, dtype=self.dtype)
    self.mouth_fc = ReluDense(self.num_classes, dtype=self.dtype)
    self.to_headpose = MLP(d, d, dtype=self.dtype)
    self.headpose_embed = ReluDense(self.pose_dim, dtype=self.dtype)
    self.headpose_fc = ReluDense(self.num_classes, dtype=self.dtype)

  def features(self, images: Array, train: bool = False) -> Array:
    """Non-identity feature (B, feature_dim) of images (B, resolution, resolution, 3)."""
    if images.shape[1:3] != (self.resolution, self.resolution):
      # The trunk's last linear layer is sized by the resolution.
      raise ValueError(f"E_n expects {self.resolution}x{self.resolution} images, "
                       f"got {images.shape}")
    if self.grayscale:
      luma = images @ jnp.asarray(LUMA_WEIGHTS, images.dtype)
      images = jnp.repeat(luma[..., None], 3, axis=-1)
    return self.fan(images, train)

  def __call__(self, images: Array, train: bool = False) -> dict[str, Array]:
    """images (B, H, W, 3) -> {feature, mouth, headpose, mouth_embed, pose_code}."""
    feature = self.features(images, train)
    mouth = self.to_mouth(feature)
    headpose = self.to_headpose(feature)
    out = {"feature": feature, "mouth": mouth, "headpose": headpose,
           "mouth_embed": self.embed_mouth(mouth), "pose_code": self.headpose_embed(headpose)}
    if self.is_initializing():   # create the classification heads' parameters too
      self.classify(feature)
      self.classify_mouth(jnp.zeros((1, self.clip_len * self.feature_dim), feature.dtype))
      self.classify_pose(jnp.zeros((1, self.clip_len * self.pose_dim), feature.dtype))
    return out

  def embed_mouth(self, mouth_feature: Array) -> Array:
    """Mouth embedding (B, mouth_dim) of a visual or audio mouth feature (B, feature_dim)."""
    return self.mouth_embed(mouth_feature)

  def classify(self, feature: Array) -> Array:
    """Identity scores from the non-identity feature (official `classifier`)."""
    return self.classifier(feature)

  def classify_mouth(self, mouth: Array) -> Array:
    """Identity scores from clip_len mouth features, (B * clip_len, D) or (B, clip_len * D)."""
    return self.mouth_fc(mouth.reshape(-1, self.clip_len * self.feature_dim))

  def classify_pose(self, pose_code: Array) -> Array:
    """Identity scores from clip_len pose codes (official `headpose_fc`, the disentangling term)."""
    return self.headpose_fc(pose_code.reshape(-1, self.clip_len * self.pose_dim))
