"""The three PC-AVS encoders (flax.linen, NHWC).

- `IdentityEncoder` (E_i): ResNeXt-50 32x4d; identity vector, identity map, identity scores.
- `NonIdentityEncoder` (E_n): one-stack FAN hourglass plus the mouth / head-pose mappers
  that split its feature into a mouth feature and the implicit pose code.
- `AudioEncoder` (E_a): SE-ResNet with attentive pooling over time; maps a mel window into
  the mouth space.

Parameters are float32; `dtype` is the compute dtype. Every BatchNorm takes `bn_axis_name`
so statistics can be synchronised across replicas during training. Layer names are stable:
`pcavs_jax.convert.map_encoders` maps the official PyTorch checkpoints onto them.
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


# ----------------------------------------------------------------------------- helpers

# ITU-R BT.601 luma weights of (R, G, B): a pixel's luminance.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def scaled_channels(channels: int, width: float, multiple: int = 1) -> int:
  """`channels * width` rounded to a positive multiple of `multiple`."""
  c = int(round(channels * width / multiple)) * multiple
  return max(multiple, c)


def _pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
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


def _batch_norm(train: bool, dtype: Dtype, axis_name: str | None, name: str) -> nn.BatchNorm:
  # momentum 0.9 here is PyTorch's momentum 0.1.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
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


def _conv(features: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = False,
          groups: int = 1, dense_grads: bool = False, dtype: Dtype = jnp.float32,
          name: str | None = None) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=_pad(padding),
                 use_bias=bias, feature_group_count=groups, dtype=dtype,
                 param_dtype=jnp.float32, name=name,
                 conv_general_dilated=(grouped_conv_dense_grads if dense_grads and groups > 1
                                       else None))


def _dense(features: int, dtype: Dtype, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)


class MLP(nn.Module):
  """Linear -> ReLU -> Linear (the official `to_mouth`, `to_headpose`, `classifier`)."""

  hidden: int
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.relu(_dense(self.hidden, self.dtype, "fc1")(x))
    return _dense(self.features, self.dtype, "fc2")(x)


class ReluDense(nn.Module):
  """ReLU -> Linear (the official `mouth_embed`, `headpose_embed`, `*_fc` heads)."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return _dense(self.features, self.dtype, "fc")(nn.relu(x))


# ----------------------------------------------------------------------------- E_i


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
    bn = functools.partial(_batch_norm, train, self.dtype, self.bn_axis_name)
    y = _conv(self.width, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(bn("bn1")(y))
    y = _conv(self.width, 3, self.stride, 1, groups=self.groups, dense_grads=self.dense_grads,
              dtype=self.dtype, name="conv2")(y)
    y = nn.relu(bn("bn2")(y))
    y = _conv(self.out_channels, 1, dtype=self.dtype, name="conv3")(y)
    y = bn("bn3")(y)
    if self.downsample:
      x = _conv(self.out_channels, 1, self.stride, dtype=self.dtype, name="downsample_conv")(x)
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
    x = _conv(stem, 7, 2, 3, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(_batch_norm(train, self.dtype, self.bn_axis_name, "bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(1))
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
    id_map = _conv(self.map_channels, 1, bias=True, dtype=self.dtype, name="conv1x1")(x)
    id_map = adaptive_avg_pool(id_map, (self.map_size, self.map_size))
    class_scores = _dense(self.num_classes, self.dtype, "fc")(id_vector)
    return {"id_vector": id_vector, "id_map": id_map, "class_scores": class_scores}


# ----------------------------------------------------------------------------- E_n


class ConvBlock(nn.Module):
  """FAN's pre-activation block: three BN-ReLU-conv3x3 (out/2, out/4, out/4), concatenated.

  The input joins through BN-ReLU-conv1x1 when the channel count changes. No conv biases.
  """

  out_channels: int
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    bn = functools.partial(_batch_norm, train, self.dtype, self.bn_axis_name)
    half, quarter = self.out_channels // 2, self.out_channels // 4
    h1 = _conv(half, 3, 1, 1, dtype=self.dtype, name="conv1")(nn.relu(bn("bn1")(x)))
    h2 = _conv(quarter, 3, 1, 1, dtype=self.dtype, name="conv2")(nn.relu(bn("bn2")(h1)))
    h3 = _conv(quarter, 3, 1, 1, dtype=self.dtype, name="conv3")(nn.relu(bn("bn3")(h2)))
    out = jnp.concatenate([h1, h2, h3], axis=-1)
    if x.shape[-1] != self.out_channels:
      x = nn.relu(bn("downsample_bn")(x))
      x = _conv(self.out_channels, 1, dtype=self.dtype, name="downsample_conv")(x)
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
    bn = functools.partial(_batch_norm, train, self.dtype, self.bn_axis_name)
    block = functools.partial(ConvBlock, dtype=self.dtype, bn_axis_name=self.bn_axis_name)
    c64, c128, c256 = (scaled_channels(c, self.width, 4) for c in (64, 128, 256))
    x = images.astype(self.dtype)
    x = _conv(c64, 7, 2, 3, bias=True, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(bn("bn1")(x))
    x = block(c128, name="conv2")(x, train)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = block(c128, name="conv3")(x, train)
    x = block(c256, name="conv4")(x, train)
    x = Hourglass(hourglass_depth(min(x.shape[1:3])), c256, dropout_rate=self.dropout_rate,
                  dtype=self.dtype,
                  bn_axis_name=self.bn_axis_name, name="hourglass")(x, train)
    x = block(c256, name="top_block")(x, train)
    x = bn("bn_end")(_conv(c256, 1, bias=True, dtype=self.dtype, name="conv_last")(x))
    x = _conv(self.num_landmarks, 1, bias=True, dtype=self.dtype, name="heatmaps")(nn.relu(x))
    x = nn.relu(bn("heatmap_bn")(x))
    x = _conv(1, 3, 2, 1, bias=True, dtype=self.dtype, name="conv_out")(x)
    x = nn.relu(x.reshape(x.shape[0], -1))      # (B, (resolution / 8)^2)
    return _dense(self.feature_dim, self.dtype, "fc")(x)


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


# ----------------------------------------------------------------------------- E_a


class SqueezeExcitation(nn.Module):
  """Channel gate: mean over H, W; Linear c -> c/r, ReLU, Linear -> c, sigmoid; multiply."""

  reduction: int = 8
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    y = jnp.mean(x, axis=(1, 2))
    y = nn.relu(_dense(max(1, c // self.reduction), self.dtype, "fc1")(y))
    y = nn.sigmoid(_dense(c, self.dtype, "fc2")(y))
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
    bn = functools.partial(_batch_norm, train, self.dtype, self.bn_axis_name)
    y = _conv(self.channels, 3, self.stride, 1, dtype=self.dtype, name="conv1")(x)
    y = bn("bn1")(nn.relu(y))     # official order: ReLU before BN
    y = bn("bn2")(_conv(self.channels, 3, 1, 1, dtype=self.dtype, name="conv2")(y))
    y = SqueezeExcitation(dtype=self.dtype, name="se")(y)
    if self.downsample:
      x = _conv(self.channels, 1, self.stride, dtype=self.dtype, name="downsample_conv")(x)
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
    bn = functools.partial(_batch_norm, train, self.dtype, self.bn_axis_name)
    x = mel.astype(self.dtype)
    c0 = scaled_channels(32, self.width)
    x = _conv(c0, 3, 1, 1, bias=True, dtype=self.dtype, name="conv1")(x)
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
    return _dense(self.feature_dim, self.dtype, "fc")(x)


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
