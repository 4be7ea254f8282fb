"""PC-AVS training losses as pure jnp functions (NHWC images, (B, D) features).

The discriminator's output per scale is a list `[image, out_1, ..., out_4, logits]`: element 0 is
the (downsampled) image the scale saw, the last element its patch logits. A bare array is treated
as the logits of a single scale.

Official counterparts (Hangz-nju-cuhk/Talking-Face_PC-AVS, models/networks/loss.py, av_model.py):
`GANLoss('hinge')` -> `hinge_d_loss` / `hinge_g_loss`; `compute_GAN_Feat_loss` ->
`feature_matching_loss`; `SoftmaxContrastiveLoss` -> `softmax_contrastive_loss`;
`compute_sync_loss` -> `sync_loss`; `CrossEntropyLoss` -> `cross_entropy_loss`;
`L2SoftmaxLoss` (the disentangling term) -> `softmax_uniform_loss`. The VGG perceptual loss lives in
`pcavs_jax.models.vgg`.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Union

import dm_pix
import jax
import jax.numpy as jnp

Array = jax.Array

# The official weights (options lambda_D, lambda_feat, lambda_image, lambda_vgg, lambda_contrastive,
# lambda_crossmodal, lambda_softmax; the identity cross-entropy is unweighted).
OFFICIAL_LOSS_WEIGHTS = {
    "gan": 1.0, "feature_matching": 10.0, "image": 1.0, "vgg": 10.0, "contrastive": 100.0,
    "crossmodal_l1": 1.0, "identity": 1.0, "softmax_uniform": 1e6,
}
ScaleOutput = Union[Array, Sequence[Array]]
DOutput = Union[Array, Sequence[ScaleOutput]]


def _scales(predictions: DOutput) -> list[ScaleOutput]:
  """The per-scale outputs of a (multiscale) discriminator as a list."""
  if isinstance(predictions, (list, tuple)):
    return list(predictions)
  return [predictions]


def _logits(scale_output: ScaleOutput) -> Array:
  if isinstance(scale_output, (list, tuple)):
    return scale_output[-1]
  return scale_output


def hinge_d_loss(predictions: DOutput, real: bool) -> Array:
  """Hinge loss of the discriminator, averaged over scales.

  Args:
    predictions: the discriminator's outputs for one kind of input (all real or all fake).
    real: whether the inputs were real images.

  Returns:
    mean over scales of mean(relu(1 - logits)) for reals, mean(relu(1 + logits)) for fakes.
  """
  sign = -1.0 if real else 1.0
  losses = [jnp.mean(jax.nn.relu(1.0 + sign * _logits(p))) for p in _scales(predictions)]
  return sum(losses) / len(losses)


def hinge_g_loss(predictions: DOutput) -> Array:
  """Generator side of the hinge GAN loss, -mean(D(fake)), averaged over scales."""
  losses = [-jnp.mean(_logits(p)) for p in _scales(predictions)]
  return sum(losses) / len(losses)


def l1_loss(x: Array, y: Array) -> Array:
  """Mean absolute difference (torch `L1Loss`)."""
  return jnp.mean(jnp.abs(x - y))


def box_l1_loss(x: Array, y: Array, box: Sequence[float]) -> Array:
  """L1 inside a box of NHWC images, the box given as (top, bottom, left, right) fractions.

  Aligned face crops put the mouth in a fixed region, so a box there weights the few mouth
  pixels that a whole-image loss barely sees (not in the paper).
  """
  top, bottom, left, right = box
  if not 0.0 <= top < bottom <= 1.0 or not 0.0 <= left < right <= 1.0:
    raise ValueError(f"box {tuple(box)} is not (top, bottom, left, right) fractions "
                     "with top < bottom and left < right inside [0, 1]")
  def span(lo: float, hi: float, n: int) -> slice:
    start = int(round(lo * n))
    return slice(start, max(int(round(hi * n)), start + 1))   # at least one pixel
  rows, cols = span(top, bottom, x.shape[1]), span(left, right, x.shape[2])
  return l1_loss(x[:, rows, cols], y[:, rows, cols])


def _box_mean(z: Array, size: int) -> Array:
  """Mean over every `size` x `size` window of NHWC images ('valid'), as two 1-D sums."""
  z = jax.lax.reduce_window(z, 0.0, jax.lax.add, (1, size, 1, 1), (1, 1, 1, 1), "VALID")
  z = jax.lax.reduce_window(z, 0.0, jax.lax.add, (1, 1, size, 1), (1, 1, 1, 1), "VALID")
  return z / size**2


def ssim_loss(x: Array, y: Array, window: int = 7) -> Array:
  """1 - SSIM of NHWC images in [-1, 1], batch mean (not in the paper).

  A uniform 7 x 7 window, skimage's default and so the evaluation's; dm_pix's Gaussian default
  filters by vmapped 1-D convolutions, 15x slower here. L1 alone lets G trade structure for blur.
  """
  return jnp.mean(1.0 - dm_pix.ssim(x, y, max_val=2.0,
                                    filter_fn=functools.partial(_box_mean, size=window)))


def truth_regression_loss(code: Array, target: Array) -> Array:
  """Mean squared error between the first `target.shape[-1]` numbers of each code and `target`.

  Ties named numbers of a learned code to known ground truth, as SynthTalk gives it (not in the
  paper): the rest of the code stays free.
  """
  k = target.shape[-1]
  if code.shape[-1] < k:
    raise ValueError(f"a code of {code.shape[-1]} numbers cannot hold {k} supervised ones")
  return jnp.mean(jnp.square(code[..., :k] - target))


def feature_matching_loss(fake: DOutput, real: DOutput, lambda_feat: float = 10.0,
                          lambda_image: float = 1.0) -> Array:
  """pix2pixHD feature matching between the discriminator's outputs on fakes and reals.

  L1 over every element a scale returns except its logits, real side detached, each term weighted
  lambda_feat / num_scales. Element 0 is the image itself, so its term (times lambda_image) is an
  L1 image reconstruction at that scale's resolution.

  Args:
    fake: per-scale lists `[image, out_1, ..., logits]` for the generated images.
    real: the same for the real images (gradients are stopped).
    lambda_feat: weight of the whole term (10 official).
    lambda_image: extra weight of the image element (1 official).

  Returns:
    the scalar loss.
  """
  fake, real = _scales(fake), _scales(real)
  if len(fake) != len(real):
    raise ValueError(f"fake has {len(fake)} scales, real {len(real)}")
  total = jnp.zeros((), jnp.float32)
  for f_scale, r_scale in zip(fake, real):
    if len(f_scale) != len(r_scale):
      raise ValueError(f"a scale returns {len(f_scale)} fake and {len(r_scale)} real outputs")
    for j, (f, r) in enumerate(zip(f_scale[:-1], r_scale[:-1])):
      term = l1_loss(f, jax.lax.stop_gradient(r))
      if j == 0:
        term = term * lambda_image
      total = total + term * (lambda_feat / len(fake))
  return total


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
  """x / max(||x||, eps) along the last axis (torch `F.normalize`).

  The clamp sits under the square root (same values): the gradient of sqrt at an all-zero row
  (a ReLU mouth feature can be one) would otherwise be 0 * inf = NaN.
  """
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))


def pairwise_inverse_distance(x: Array, y: Array, eps: float = 1e-12) -> Array:
  """logits[i, j] = 1 / ||x_i - y_j|| on L2-normalised rows of x (B, D) and y (B', D).

  The official code has no epsilon; `eps` sits under the square root only so that gradients stay
  finite where two features coincide (it changes no distance above ~1e-5).
  """
  x, y = l2_normalize(x), l2_normalize(y)
  # Explicit differences rather than |x|^2 + |y|^2 - 2xy: no cancellation for close pairs.
  sq = jnp.sum(jnp.square(x[:, None, :] - y[None, :, :]), axis=-1)
  return jax.lax.rsqrt(sq + eps)


def pairwise_scaled_cosine(x: Array, y: Array, scale: float, norm_floor: float = 1e-2) -> Array:
  """logits[i, j] = scale * cos(x_i, y_j): bounded logits (not in the paper, see `sync_loss`).

  Rows shorter than `norm_floor` are divided by the floor, not by their norm, which bounds the
  gradient at a row that is (nearly) zero by 1 / norm_floor: a fresh E_n can emit an all-zero mouth
  feature (every ReLU of `to_mouth` off), and torch's 1e-12 floor then sent a 7e13 gradient into
  `to_mouth`, which killed E_n's training at lr 3e-3.
  """
  return scale * (l2_normalize(x, norm_floor) @ l2_normalize(y, norm_floor).T)


def cross_entropy_loss(scores: Array, labels: Array) -> Array:
  """Softmax cross-entropy with integer labels, mean over the batch (torch `F.cross_entropy`)."""
  log_probs = jax.nn.log_softmax(scores.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, labels.astype(jnp.int32)[:, None], axis=-1)
  return -jnp.mean(picked)


def softmax_contrastive_loss(x: Array, y: Array, cosine_scale: float = 0.0) -> Array:
  """The sync loss' softmax contrastive term: sample i of x must pick sample i of y.

  Cross-entropy over logits[i, j] = 1 / ||x_i - y_j|| (L2-normalised features), label i; the other
  samples of the batch are the negatives. No gradient is stopped here: the official calls it as
  `criterion(visual.detach(), audio)` and `criterion(audio.detach(), visual)` (see `sync_loss`).

  Args:
    x: (B, D) anchor features (the rows of the logits).
    y: (B, D) features to match them with (the columns).
    cosine_scale: > 0 replaces the inverse distances by `cosine_scale` times the cosine similarity.

  Returns:
    the scalar mean cross-entropy.
  """
  x = x.reshape(x.shape[0], -1).astype(jnp.float32)
  y = y.reshape(y.shape[0], -1).astype(jnp.float32)
  if cosine_scale > 0:
    logits = pairwise_scaled_cosine(x, y, cosine_scale)
  else:
    logits = pairwise_inverse_distance(x, y)
  return cross_entropy_loss(logits, jnp.arange(x.shape[0]))


def sync_loss(visual: Array, audio: Array, contrastive_weight: float = 100.0,
              l1_weight: float = 1.0, cosine_scale: float = 0.0) -> tuple[Array, dict[str, Array]]:
  """Audio-visual sync loss between visual and audio mouth features (official `compute_sync_loss`).

  Terms (weighted; a zero weight drops the term):
    sync_l1: L1(stop_grad(visual), audio), pulling the audio feature to the visual one.
    sync_contrastive_va: softmax contrastive with visual rows, visual detached (trains audio).
    sync_contrastive_av: the same with audio rows, audio detached (trains visual).

  Args:
    visual: (B, D) visual mouth features (E_n then `to_mouth`); (B, T, D) clips are flattened.
    audio: (B, D) audio mouth features (E_a), same shape.
    contrastive_weight: weight of each contrastive direction (lambda_contrastive, 100).
    l1_weight: weight of the L1 term (lambda_crossmodal, 1).
    cosine_scale: 0 (official): logits are inverse distances, which are unbounded and, between
      the nearly equal features of untrained encoders, huge and erratic. > 0: scaled cosine
      similarities instead (not in the paper; bounded by +-cosine_scale).

  Returns:
    (total, {term name: weighted value}).
  """
  visual = visual.reshape(visual.shape[0], -1)
  audio = audio.reshape(audio.shape[0], -1)
  sg = jax.lax.stop_gradient
  terms = {}
  if l1_weight:
    terms["sync_l1"] = l1_weight * l1_loss(sg(visual), audio)
  if contrastive_weight:
    contrast = functools.partial(softmax_contrastive_loss, cosine_scale=cosine_scale)
    terms["sync_contrastive_va"] = contrastive_weight * contrast(sg(visual), audio)
    terms["sync_contrastive_av"] = contrastive_weight * contrast(sg(audio), visual)
  total = sum(terms.values()) if terms else jnp.zeros((), jnp.float32)
  return total, terms


def softmax_uniform_loss(scores: Array) -> Array:
  """MSE between softmax(scores) and the uniform distribution (official `L2SoftmaxLoss`).

  The disentangling term: the generator side pushes the identity classifier on the pose codes
  toward chance, so the pose code carries no identity.
  """
  probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
  return jnp.mean(jnp.square(probs - 1.0 / scores.shape[-1]))
