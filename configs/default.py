"""The paper's PC-AVS setup: 224 px, official network sizes and training schedule.

Launch:
  pcavs-jax train --config configs/default.py --workdir /tmp/pcavs
  pcavs-jax train --config configs/default.py:variant=tiny --workdir /tmp/tiny
"""
import ml_collections

from pcavs_jax.train.config import base_config


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
  """The paper's full-stage training at 224 px.

  Args:
    arg: 'variant=official' (default) or 'variant=tiny' (64 px, narrow, for smoke runs).
  """
  args = parse_arg(arg, variant="official")
  config = base_config()
  if args.variant == "official":
    pass
  elif args.variant == "tiny":
    config.model.resolution = 64
    config.model.width = 0.125
    config.model.feature_dim = 64
    config.model.mouth_dim = 64
    config.model.num_classes = 16
    config.model.d_channels = 16
    config.data.batch_size = 4
    config.data.shuffle_buffer = 16
    config.train.ema_decay = 0.99     # so smoke runs carry (and tests check) the moving average
    config.num_train_steps = 2
    config.log_every = 1
    config.checkpoint_every = 2
    config.image_every = 0
  else:
    raise ValueError(f"unknown variant {args.variant!r} (official, tiny)")
  return config
