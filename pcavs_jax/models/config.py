"""Network sizes: the official model config and its scaled-down variants."""
import ml_collections


def model_config(resolution: int = 224, width: float = 1.0) -> ml_collections.ConfigDict:
  """Network sizes. Every field is a keyword of `pcavs_jax.models.PCAVS` / the discriminator."""
  m = ml_collections.ConfigDict()
  m.resolution = resolution        # square frames; 224 official, 56 / 64 for small configs
  m.width = width                  # channel multiplier for every network (1.0 official)
  m.pose_dim = 12                  # implicit pose code size
  m.mouth_dim = 500                # mouth embedding (style part)
  m.feature_dim = 512              # E_n / E_a feature size
  m.num_classes = 5830             # identity classes (VoxCeleb2 train ids in the official model)
  m.clip_len = 1
  m.audio_mouth_weight = 1.2       # official inference scales the audio mouth feature
  m.hourglass_dropout = 0.5        # E_n hourglass dropout in training
  m.fixed_pose = False             # ablation: zero pose code
  m.pose_grayscale = False         # E_n reads luminance only (not in the paper)
  m.generator_width = 0.0          # G's own channel multiplier; 0: `width` (not in the paper)
  m.grouped_conv_grads = "auto"    # E_i's grouped-conv gradients: native | dense | auto (CPU: dense)
  m.d_scales = 2
  m.d_layers = 4
  m.d_channels = 64
  m.dtype = "float32"              # compute dtype; "bfloat16" on accelerators
  return m
