"""The composed PC-AVS model: identity, non-identity and audio encoders feeding the generator.

Methods are named after the paper's operations, so callers read like the method:

  identity = model.apply(v, references, method=model.encode_identity)     # once per video
  out = model.apply(v, identity, mel, pose_frames, method=model.drive)    # per frame batch
  out = model.apply(v, reference, mel, pose, method=model.infer)          # both at once
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from pcavs_jax.models.audio_encoder import AudioEncoder
from pcavs_jax.models.identity_encoder import IdentityEncoder
from pcavs_jax.models.layers import scaled_channels
from pcavs_jax.models.nonidentity_encoder import NonIdentityEncoder
from pcavs_jax.models.generator import Generator, generator_channels, start_size

Array = Any


def identity_dim(width: float) -> int:
  """Length of the identity vector: ResNeXt-50's layer4 width (2048 at width 1)."""
  return 4 * scaled_channels(512, width)


class PCAVS(nn.Module):
  """PC-AVS: E_i, E_n (+ mouth / head-pose mappers), E_a and the modulated-conv generator G.

  Attributes:
    resolution: square frame size (224 official).
    width: channel multiplier shared by every network (1.0 official).
    pose_dim: size of the implicit pose code (12 official).
    mouth_dim: size of the mouth embedding that enters the style (500 official).
    feature_dim: E_n / E_a feature size (512 official).
    num_classes: identity classes of the classifiers.
    clip_len: frames per training clip (sizes of the clip-level classifiers).
    audio_mouth_weight: audio mouth features are scaled by this at inference (1.2 official).
    hourglass_dropout: E_n's hourglass dropout in training (0.5 official).
    fixed_pose: ablation: the generator receives a zero pose code, so no pose is controllable.
    pose_grayscale: E_n reads the pose source's luminance only (off officially).
    generator_width: G's own channel multiplier (and so the identity map's channels);
      0 uses `width` (not in the paper, which has one width).
    grouped_conv_grads: E_i's grouped-conv gradients, 'native', 'dense' (block-diagonal form:
      same result, much faster on CPU) or 'auto' (dense on the CPU backend).
    dtype: compute dtype; parameters stay float32.
    bn_axis_name: pmap axis over which BatchNorm statistics are averaged in training.
  """
  resolution: int = 224
  width: float = 1.0
  pose_dim: int = 12
  mouth_dim: int = 500
  feature_dim: int = 512
  num_classes: int = 5830
  clip_len: int = 1
  audio_mouth_weight: float = 1.2
  hourglass_dropout: float = 0.5
  fixed_pose: bool = False
  pose_grayscale: bool = False
  generator_width: float = 0.0
  grouped_conv_grads: str = "auto"
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @property
  def g_width(self) -> float:
    """G's channel multiplier: `generator_width`, or the shared `width` when it is 0."""
    return self.generator_width or self.width

  def setup(self):
    size = start_size(self.resolution)
    self.identity_encoder = IdentityEncoder(
        width=self.width, num_classes=self.num_classes, map_size=size,
        map_channels=generator_channels(self.resolution, self.g_width)[0][1],
        grouped_conv_grads=self.grouped_conv_grads,
        dtype=self.dtype, bn_axis_name=self.bn_axis_name)
    self.nonidentity_encoder = NonIdentityEncoder(
        width=self.width, feature_dim=self.feature_dim, mouth_dim=self.mouth_dim,
        pose_dim=self.pose_dim, num_classes=self.num_classes, clip_len=self.clip_len,
        resolution=self.resolution, hourglass_dropout=self.hourglass_dropout,
        grayscale=self.pose_grayscale, dtype=self.dtype,
        bn_axis_name=self.bn_axis_name)
    self.audio_encoder = AudioEncoder(
        width=self.width, feature_dim=self.feature_dim, num_classes=self.num_classes,
        dtype=self.dtype, bn_axis_name=self.bn_axis_name)
    self.generator = Generator(
        resolution=self.resolution, width=self.g_width,
        style_dim=identity_dim(self.width) + self.mouth_dim + self.pose_dim, dtype=self.dtype)

  def encode_identity(self, references: Array, train: bool = False) -> dict[str, Array]:
    """Identity vector and map of one or several reference images per item.

    Args:
      references: (B, H, W, 3), or (B, N, H, W, 3) for N references averaged per item.
      train: BatchNorm in training mode.

    Returns:
      id_vector (B, 2048w), id_map (B, s, s, C) at the generator's start size, class_scores.
    """
    if references.ndim == 4:
      references = references[:, None]
    b, n = references.shape[:2]
    out = self.identity_encoder(references.reshape((b * n,) + references.shape[2:]), train=train)
    return {k: v.reshape((b, n) + v.shape[1:]).mean(axis=1) for k, v in out.items()}

  def encode_nonidentity(self, frames: Array, train: bool = False) -> dict[str, Array]:
    """E_n of pose-source frames: feature, mouth, headpose, mouth_embed and pose_code."""
    return self.nonidentity_encoder(frames, train=train)

  def encode_audio(self, mel: Array, train: bool = False) -> dict[str, Array]:
    """E_a of (B, 80, 20) mel windows: the audio mouth feature and its mouth embedding."""
    feature = self.audio_encoder(mel, train=train)
    return {"mouth": feature, "mouth_embed": self.nonidentity_encoder.embed_mouth(feature)}

  def embed_mouth(self, mouth_feature: Array) -> Array:
    return self.nonidentity_encoder.embed_mouth(mouth_feature)

  def merge(self, id_vector: Array, mouth_embed: Array, pose_code: Array) -> Array:
    """The generator's style: concat(identity vector, mouth embedding, pose code)."""
    if self.fixed_pose:
      pose_code = jnp.zeros_like(pose_code)
    return jnp.concatenate([id_vector, mouth_embed, pose_code], axis=-1)

  def generate(self, style: Array, id_map: Array, train: bool = False) -> Array:
    return self.generator(style, id_map, train=train)

  def drive(self, identity: dict[str, Array], mel: Array, pose: Array | None,
            train: bool = False) -> Array:
    """Frames of an encoded identity with the mouth of `mel` and the pose of `pose`.

    Args:
      identity: `encode_identity` output (id_vector, id_map); broadcast over the batch if its
        batch is 1.
      mel: (B, 80, 20) mel windows; the audio mouth feature is scaled by audio_mouth_weight.
      pose: (B, H, W, 3) pose-source frames, or a (B, pose_dim) pose code.

    Returns:
      (B, H, W, 3) frames in [-1, 1].
    """
    return self._drive_mouth(identity, self._audio_mouth_embed(mel, train), pose, train)

  def _audio_mouth_embed(self, mel: Array, train: bool) -> Array:
    """Mouth embedding of the audio, its feature scaled by audio_mouth_weight as at inference."""
    audio_mouth = self.audio_encoder(mel, train=train) * self.audio_mouth_weight
    return self.nonidentity_encoder.embed_mouth(audio_mouth)

  def _drive_mouth(self, identity: dict[str, Array], mouth_embed: Array, pose: Array,
                   train: bool) -> Array:
    pose_code = pose if pose.ndim == 2 else self.nonidentity_encoder(pose, train=train)["pose_code"]
    b = mouth_embed.shape[0]
    id_vector = jnp.broadcast_to(identity["id_vector"], (b,) + identity["id_vector"].shape[1:])
    id_map = jnp.broadcast_to(identity["id_map"], (b,) + identity["id_map"].shape[1:])
    return self.generate(self.merge(id_vector, mouth_embed, pose_code), id_map, train=train)

  def infer(self, reference: Array, mel: Array, pose: Array, with_reference_pose: bool = False,
            train: bool = False) -> dict[str, Array]:
    """The official inference: identity from `reference`, mouth from `mel`, pose from `pose`.

    Args:
      reference: (B, H, W, 3) or (B, N, H, W, 3) reference images in [-1, 1].
      mel: (B, 80, 20) mel windows in [0, 1].
      pose: (B, H, W, 3) pose-source frames in [-1, 1].
      with_reference_pose: also draw the frame with the reference's own pose (a second
        generator pass), as the official demo does.

    Returns:
      {"driven": (B, H, W, 3)} and, when asked, "reference_pose".
    """
    identity = self.encode_identity(reference, train=train)
    mouth_embed = self._audio_mouth_embed(mel, train)  # shared by both poses
    out = {"driven": self._drive_mouth(identity, mouth_embed, pose, train)}
    if with_reference_pose:
      first = reference if reference.ndim == 4 else reference[:, 0]
      out["reference_pose"] = self._drive_mouth(identity, mouth_embed, first, train)
    return out

  def __call__(self, reference: Array, mel: Array, pose_source: Array,
               train: bool = False, visual_fake: bool = True) -> dict[str, Array]:
    """One training forward: every feature the losses read, and both reconstructions.

    As in the official training, the pose-source frame (the augmented target) gives the pose
    code, and the mouth comes once from its visual mouth feature (`fake_visual`) and once from
    the audio (`fake_audio`); both go through one generator call as one batch.

    Args:
      reference: (B, H, W, 3) or (B, N, H, W, 3) reference frames of the target's identity.
      mel: (B, 80, 20) mel windows centred on the targets.
      pose_source: (B, H, W, 3) augmented targets.
      train: BatchNorm / dropout in training mode.
      visual_fake: also draw `fake_visual` (not drawing it is not in the paper).
    """
    identity = self.encode_identity(reference, train=train)
    visual = self.encode_nonidentity(pose_source, train=train)
    audio = self.encode_audio(mel, train=train)
    b = mel.shape[0]
    mouths = ([visual["mouth_embed"]] if visual_fake else []) + [audio["mouth_embed"]]
    style = jnp.concatenate([self.merge(identity["id_vector"], mouth, visual["pose_code"])
                             for mouth in mouths])
    fakes = self.generate(style, jnp.concatenate([identity["id_map"]] * len(mouths)), train=train)
    drawn = {"fake_visual": fakes[:b]} if visual_fake else {}
    return {
        "identity": identity,
        "visual": visual,
        "audio": audio,
        **drawn,
        "fake_audio": fakes[-b:],
        "audio_class_scores": self.audio_encoder.classify(audio["mouth"]),
        "visual_class_scores": self.nonidentity_encoder.classify(visual["feature"]),
        "mouth_class_scores": self.nonidentity_encoder.classify_mouth(visual["mouth"]),
        "pose_class_scores": self.nonidentity_encoder.classify_pose(visual["pose_code"]),
    }


def abstract_variables(model: PCAVS) -> dict:
  """Shapes and dtypes of the model's variables ({'params', 'batch_stats'}), without computing them."""
  import jax
  r = model.resolution
  image = jnp.zeros((1, r, r, 3), jnp.float32)
  return jax.eval_shape(model.init, {"params": jax.random.key(0)}, image,
                        jnp.zeros((1, 80, 20), jnp.float32), image)


def build_model(model_config) -> PCAVS:
  """PCAVS from a `config.model` ConfigDict (see configs/default.py)."""
  c = dict(model_config)
  for key in ("d_scales", "d_layers", "d_channels"):
    c.pop(key, None)
  c["dtype"] = jnp.dtype(c.get("dtype", "float32"))
  return PCAVS(**c)


def build_discriminator(model_config):
  """The multiscale PatchGAN D from a `config.model` ConfigDict."""
  from pcavs_jax.models.discriminator import MultiscaleDiscriminator
  return MultiscaleDiscriminator(num_scales=model_config.d_scales, num_layers=model_config.d_layers,
                                 base_channels=model_config.d_channels,
                                 dtype=jnp.dtype(model_config.get("dtype", "float32")))
