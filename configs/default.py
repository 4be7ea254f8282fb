"""The paper's PC-AVS setup: 224 px, official network sizes and training schedule.

Launch:
  pcavs-jax train --config configs/default.py --workdir /tmp/pcavs
  pcavs-jax train --config configs/default.py:variant=tiny --workdir /tmp/tiny
"""
import ml_collections

from pcavs_jax.models.config import model_config


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


def loss_config() -> ml_collections.ConfigDict:
  """Loss weights (official defaults; `l1_image`, `mouth_l1` and `sync_cosine_scale` are not in the paper)."""
  w = ml_collections.ConfigDict()
  w.gan = 1.0                 # lambda_D: hinge GAN, averaged over D scales
  w.feature_matching = 10.0   # lambda_feat; 0 switches feature matching off
  w.image = 1.0               # lambda_image: the image element of feature matching
  w.vgg = 10.0                # lambda_vgg; only with config.vgg_weights
  w.contrastive = 100.0       # lambda_contrastive: softmax contrastive sync loss, both directions
  w.crossmodal_l1 = 1.0       # lambda_crossmodal: L1 audio mouth -> detached visual mouth
  w.identity = 1.0            # identity cross-entropy on E_i's scores
  w.sync_cosine_scale = 0.0   # > 0: contrastive logits = scale * cosine, not 1 / distance
  w.l1_image = 0.0            # pixel L1 on the whole frame
  w.mouth_l1 = 0.0            # pixel L1 inside `mouth_box` of the aligned frame
  w.mouth_box = (0.38, 0.66, 0.26, 0.74)   # (top, bottom, left, right) fractions of the frame
  return w


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper's full-stage training at 224 px.

  Args:
    arg: 'variant=official' (default) or 'variant=tiny' (64 px, narrow, for smoke runs).
  """
  from pcavs_jax.data.input_pipeline import data_config
  from pcavs_jax.train.state import train_config

  args = parse_arg(arg, variant="official")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = ""              # a record folder (pcavs-jax synthtalk / preprocess output)
  config.init_checkpoint = ""       # optional: start the G side from this checkpoint
  config.vgg_weights = ""           # optional: VGG19 weights file for the perceptual loss
  config.num_train_steps = 200_000
  config.max_train_minutes = 0.0    # > 0: stop (and save) after this much wall time
  config.compilation_cache_dir = "" # JAX's persistent cache: '' ~/.cache/pcavs_jax/xla
                                    # (or $PCAVS_CACHE_DIR), 'none' off
  config.log_every = 100
  config.image_every = 1000
  config.checkpoint_every = 2000
  config.max_to_keep = 3
  config.model = model_config(224, 1.0)
  config.data = data_config()
  config.data.resolution = config.model.get_ref("resolution")
  config.data.batch_size = 16
  config.train = train_config()
  config.loss = loss_config()
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
