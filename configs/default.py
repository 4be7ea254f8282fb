"""The paper's PC-AVS setup: 224 px, official network sizes and training schedule.

Launch:
  pcavs-jax train --config configs/default.py --workdir /tmp/pcavs
  pcavs-jax train --config configs/default.py:variant=tiny --workdir /tmp/tiny
"""
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
  m.d_scales = 2
  m.d_layers = 4
  m.d_channels = 64
  m.dtype = "float32"              # compute dtype; "bfloat16" on accelerators
  return m


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'key=value,flag' strings as big_vision's `bvcc.parse_arg`."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    kind = type(defaults[key])
    out[key] = (value.lower() in ("1", "true", "")) if kind is bool else kind(value)
  return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, variant="official")
  config = ml_collections.ConfigDict()
  if args.variant == "official":
    config.model = model_config(224, 1.0)
  elif args.variant == "tiny":
    config.model = model_config(64, 0.125)
    config.model.feature_dim = 64
    config.model.mouth_dim = 64
    config.model.num_classes = 16
    config.model.d_channels = 16
  else:
    raise ValueError(f"unknown variant {args.variant!r} (official, tiny)")
  return config
