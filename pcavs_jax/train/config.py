"""Training configs: every field with its default, loading `configs/*.py[:arg]`, and checking one.

`base_config()` is the schema: a config file starts from it and changes values; a field it does
not have is a typo (`validate_config` says so). `validate_config` turns what would otherwise fail
deep inside training (an empty `data_dir`, an unknown stage, a batch that does not divide over the
devices) into one `ConfigError` line naming the setting.
"""
from __future__ import annotations

import difflib
import importlib.util
import pathlib

import ml_collections


class ConfigError(ValueError):
  """A training config that cannot run; the message names the setting and what is wrong."""


def loss_config() -> ml_collections.ConfigDict:
  """Loss weights (official defaults; `sync_cosine_scale` and every weight after `identity` are
  not in the paper and off here)."""
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
  w.ssim_image = 0.0          # 1 - SSIM of the whole frame (7 x 7 uniform window)
  w.mouth_reader = 0.0        # L1 of E_n's mouth feature, fake vs target frame (E_n frozen)
  w.mouth_box = (0.38, 0.66, 0.26, 0.74)   # (top, bottom, left, right) fractions of the frame
  # Ground-truth supervision where the records carry it (SynthTalk), each truth divided by half
  # its range: the pose code's first 3 numbers regress yaw, pitch, roll; the visual and audio
  # mouth features' first 2 regress mouth_open, mouth_width.
  w.pose_truth = 0.0
  w.mouth_truth = 0.0
  w.pose_mouth_decorrelation = 0.0   # squared correlation of the pose code with the true mouth
  # False: G draws only the audio-driven fake, not also the one from E_n's visual mouth (not in
  # the paper): about a third less work per full-stage step.
  w.visual_fake = True
  return w


def base_config() -> ml_collections.ConfigDict:
  """Every training field with its default (the paper's full stage at 224 px)."""
  from pcavs_jax.data.input_pipeline import data_config
  from pcavs_jax.models.config import model_config
  from pcavs_jax.train.optimizers import train_config

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
  config.eval_every = 0             # > 0: SynthTalk mechanism measures every this many steps
  config.eval_triples = 8           # generation rows on this many triples of each set
  config.eval_dir = ""              # the sets' folder; '' = <data_dir>/cross_driven
  config.data_reseed_every = 0      # re-seed the data order every N steps; 0 = checkpoint_every
  # Several processes (hosts): jax.distributed's coordinator; unset, jax reads the cluster's
  # environment (SLURM, TPU pods, JAX_COORDINATOR_ADDRESS).
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=1, process_id=0, local_device_ids=None))
  config.model = model_config(224, 1.0)
  config.data = data_config()
  config.data.resolution = config.model.get_ref("resolution")
  config.data.batch_size = 16
  config.train = train_config()
  config.loss = loss_config()
  return config


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` as ml_collections' config flags do: `get_config(arg)`."""
  path, _, arg = spec.partition(":")
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"--config {spec}: no such config file")
  module_spec = importlib.util.spec_from_file_location(f"_pcavs_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _unknown_field(name: str, known) -> str:
  close = difflib.get_close_matches(name.rsplit(".", 1)[-1], list(known), n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  return f"{name}: no such config field{hint}"


def unknown_fields(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict,
                   prefix: str = "config") -> list[str]:
  """One line per field of `config` that `schema` lacks, recursing into sub-configs."""
  problems = []
  for key, value in config.items():
    name = f"{prefix}.{key}"
    if key not in schema:
      problems.append(_unknown_field(name, schema.keys()))
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(
        schema[key], ml_collections.ConfigDict):
      problems += unknown_fields(value, schema[key], name)
  return problems


def check_override(config: ml_collections.ConfigDict, path: str) -> None:
  """Raises ConfigError where `--config.<path>=...` names a field the config does not have."""
  node = config
  parts = path.split(".")
  for i, key in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      name = "config." + ".".join(parts[:i + 1])
      known = node.keys() if isinstance(node, ml_collections.ConfigDict) else []
      raise ConfigError(f"--config.{path}: " + _unknown_field(name, known))
    node = node[key]


def _check_data_dir(data_dir: str) -> None:
  from pcavs_jax.data import records
  if not data_dir:
    raise ConfigError("config.data_dir is empty: set it to a record folder written by "
                      "`pcavs-jax synthtalk` or `pcavs-jax preprocess`")
  path = pathlib.Path(data_dir)
  if not path.is_dir():
    raise ConfigError(f"config.data_dir={data_dir}: no such folder")
  try:
    shards = records.list_shards(path, "train")
  except (OSError, ValueError) as e:
    raise ConfigError(f"config.data_dir={data_dir}: unreadable train records ({e})") from e
  if not shards:
    raise ConfigError(f"config.data_dir={data_dir}: no train records (expected train/*.tfrecord, "
                      "written by `pcavs-jax synthtalk` or `pcavs-jax preprocess`)")


def _check_identity_classes(config: ml_collections.ConfigDict) -> None:
  """E_i's classifier must have a class for every identity label of the train split (an
  out-of-range label makes the identity cross-entropy NaN at the first step)."""
  from pcavs_jax.data import records
  labels = records.read_manifest(config.data_dir)["splits"].get("train", {}).get("identity_labels", {})
  if labels and max(labels.values()) >= config.model.num_classes:
    raise ConfigError(f"config.model.num_classes={config.model.num_classes} is too small: "
                      f"config.data_dir={config.data_dir} has identity labels up to "
                      f"{max(labels.values())} ({len(labels)} training identities)")


def _check_truth(config: ml_collections.ConfigDict) -> None:
  """An auxiliary truth loss needs records that carry its ground truth (SynthTalk's do)."""
  from pcavs_jax.data import records
  from pcavs_jax.train.steps import TRUTH_KEYS
  have = records.read_manifest(config.data_dir)["splits"].get("train", {}).get("truth", {})
  for name, keys in TRUTH_KEYS.items():
    missing = [k for k in keys if k not in have]
    if config.loss.get(name, 0.0) > 0 and missing:
      raise ConfigError(f"config.loss.{name}={config.loss[name]} needs per-frame ground truth "
                        f"{', '.join(missing)}, which config.data_dir={config.data_dir} lacks")


def _check_stages(config: ml_collections.ConfigDict) -> None:
  from pcavs_jax.train import stages
  if config.train.stage not in stages.STAGES:
    raise ConfigError(f"config.train.stage={config.train.stage!r}: no such stage "
                      f"(known: {', '.join(stages.STAGES)})")
  try:
    stages.stage_schedule(config)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _check_batch(config: ml_collections.ConfigDict, process_count: int, local_devices: int
                 ) -> None:
  batch = config.data.batch_size
  devices = process_count * local_devices
  if batch <= 0 or batch % devices:
    raise ConfigError(f"config.data.batch_size={batch} does not divide over the {devices} "
                      f"devices ({process_count} process(es) x {local_devices} local)")


def _check_lr_steps(config: ml_collections.ConfigDict) -> None:
  from pcavs_jax.train import optimizers
  try:
    optimizers.lr_step_scales(config.train.lr_steps)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _check_precise_bn(config: ml_collections.ConfigDict) -> None:
  t = config.train
  if t.precise_bn_batches < 0 or (t.precise_bn_batches and t.precise_bn_batch_size < 1):
    raise ConfigError(f"config.train.precise_bn_batches={t.precise_bn_batches} and "
                      f"precise_bn_batch_size={t.precise_bn_batch_size}: need 0 (off), or "
                      f"batches > 0 of at least 1 frame")


def validate_config(config: ml_collections.ConfigDict, *, process_count: int | None = None,
                    local_devices: int | None = None, check_data: bool = True) -> None:
  """Raises ConfigError (one line naming the setting) for a config training cannot run.

  Checks: fields that `base_config()` does not have, `data_dir` (set, a folder, with train
  records whose identity labels fit `model.num_classes` and that carry the ground truth an
  auxiliary truth loss reads), stage names, the learning-rate steps, the global batch over all
  devices and the precise BatchNorm batches.
  """
  problems = unknown_fields(config, base_config())
  if problems:
    raise ConfigError(problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
  _check_stages(config)
  _check_lr_steps(config)
  if process_count is None or local_devices is None:
    import jax
    process_count, local_devices = jax.process_count(), jax.local_device_count()
  _check_batch(config, process_count, local_devices)
  _check_precise_bn(config)
  if check_data:
    _check_data_dir(config.data_dir)
    _check_identity_classes(config)
    _check_truth(config)
