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
  from pcavs_jax.input_pipeline import data_config
  from pcavs_jax.train_state import train_config

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
