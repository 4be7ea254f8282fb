"""The optimisers of PC-AVS training: TTUR Adam, linear decay, per-stage freezing.

Defaults (`train_config()`, placed by the configs as `config.train`):
  lr 1e-3; Adam beta1 0, beta2 0.9 (TTUR: generator side lr / 2 with AMSGrad in torch's form,
  see `scale_by_torch_amsgrad`; discriminator lr x 2);
  the rate stays constant until `decay_start_step`, then falls linearly to
  `lr x final_lr_fraction` at `decay_end_step` (no decay when decay_end_step <= decay_start_step);
  `lr_steps` ('STEP:SCALE,...', not in the paper) multiplies it by SCALE from STEP on;
  stage 'full'.

Stages and what they train (`STAGE_TRAINABLE`):
  'identity': E_i only (identity classification pretraining); D frozen.
  'sync': E_a (all of it) and E_n's `to_mouth` mapper; D frozen. As in the official code, E_n's
    trunk stays frozen (it runs under no_grad in the official sync stage and its parameters are
    left out of the optimiser) and so do `mouth_embed` and the pose heads, which the contrastive
    sync loss does not reach. The trainer should run the trunk under `stop_gradient`.
  'sync_trunk' (not in the paper): as 'sync', but E_n's trunk trains too, so the contrastive loss
    can shape the mouth features from a random E_n. No generator runs, so a step costs a fraction
    of a full one: a cheap start for audio-visual sync before 'full'.
  'full': every G-side network (E_i, E_n, E_a, G) and D.
Frozen parameters go through `optax.set_to_zero()` inside `optax.multi_transform`: their updates
are exactly zero and they carry no optimiser state.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from pcavs_jax.train.stages import STAGES, train_fields

PyTree = Any


# Per stage: the G-side parameter paths that train. A path is (network, *names): the network is
# the top-level key of g_params, the names must appear as a contiguous run of keys below it
# (e.g. ('nonidentity_encoder', 'to_mouth') matches ('nonidentity_encoder', 'to_mouth', 'Dense_0',
# 'kernel')). None trains everything.
STAGE_TRAINABLE: dict[str, tuple[tuple[str, ...], ...] | None] = {
    "identity": (("identity_encoder",),),
    "sync": (("audio_encoder",), ("nonidentity_encoder", "to_mouth")),
    "sync_trunk": (("audio_encoder",), ("nonidentity_encoder", "fan"),
                   ("nonidentity_encoder", "to_mouth")),
    "full": None,
}
STAGE_TRAINS_D = {"identity": False, "sync": False, "sync_trunk": False, "full": True}
# The official full stage's optimizer_G (av_model.py `create_optimizers`): E_n's trunk and mouth
# mapper, but not `to_headpose`, `mouth_embed` or `headpose_embed`, although the losses reach them.
OFFICIAL_FULL_TRAINABLE = (("identity_encoder",), ("audio_encoder",), ("generator",),
                           ("nonidentity_encoder", "fan"), ("nonidentity_encoder", "to_mouth"))


def train_config() -> ml_collections.ConfigDict:
  """Default `config.train` fields: the stage or schedule (`stages`) and the optimisers."""
  t = ml_collections.ConfigDict()
  t.stage = "full"              # 'identity' | 'sync' | 'sync_trunk' | 'full'
  t.schedule = ""               # stages in sequence, e.g. 'identity:1000,sync:500,full' (steps
                                # per stage; the last runs to the end); '' = `stage` throughout
  t.lr = 1e-3
  t.beta1 = 0.0
  t.beta2 = 0.9
  t.eps = 1e-8
  t.ttur = True                 # G lr / 2, D lr x 2 (official unless --no_TTUR)
  t.amsgrad = True              # G side (official: torch Adam(amsgrad=True))
  t.amsgrad_form = "torch"      # 'torch': max of the raw 2nd moment, then bias-corrected (official)
                                # 'optax': optax.amsgrad, max of the bias-corrected 2nd moment
  t.decay_start_step = 100_000  # constant lr before this step
  t.decay_end_step = 200_000    # lr x final_lr_fraction from here on
  t.final_lr_fraction = 0.0
  t.lr_steps = ""               # 'STEP:SCALE,...': both rates x SCALE from STEP on (scales
                                # multiply, as optax.piecewise_constant_schedule); '' = none
  t.noise_injection = True      # G's per-pixel noise (off: deterministic generator in training)
  t.ema_decay = 0.0             # > 0: keep an exponential moving average of the G-side params
                                # (not in the paper); evaluation and export read it
  # > 0: before every probe and checkpoint, E_i's BatchNorm statistics are re-estimated as the
  # mean of this many batches of random training frames (pcavs_jax.train.precise_bn), each of
  # precise_bn_batch_size frames (larger than training's batch: nearer the population's).
  t.precise_bn_batches = 0
  t.precise_bn_batch_size = 64
  t.full_params = "all"         # what the 'full' stage trains on the G side: 'all', or 'official'
                                # (the official optimiser's set: E_n's to_headpose, mouth_embed
                                # and headpose_embed stay at their initial values)
  return t




def learning_rate_schedules(config: ml_collections.ConfigDict) -> dict[str, optax.Schedule]:
  """The generator and discriminator learning-rate schedules (step -> lr), for optimisers and logs.

  Args:
    config: the config (or its `train` part), see `train_config`.

  Returns:
    dict(generator=schedule, discriminator=schedule).
  """
  t = train_fields(config)
  g_lr, d_lr = (t.lr / 2, t.lr * 2) if t.ttur else (t.lr, t.lr)
  start, end = int(t.decay_start_step), int(t.decay_end_step)

  steps = lr_step_scales(t.get("lr_steps", ""))

  def schedule(lr: float) -> optax.Schedule:
    if end <= start:
      base = optax.constant_schedule(lr)
    else:
      base = optax.linear_schedule(lr, lr * t.final_lr_fraction, end - start,
                                   transition_begin=start)
    if not steps:
      return base
    scale = optax.piecewise_constant_schedule(1.0, steps)
    return lambda step: base(step) * scale(step)

  return {"generator": schedule(g_lr), "discriminator": schedule(d_lr)}


def lr_step_scales(text: str) -> dict[int, float]:
  """`train.lr_steps` ('2000:1.5,8000:0.5') as optax's boundaries_and_scales {2000: 1.5, ...}."""
  scales = {}
  for item in filter(None, (x.strip() for x in text.split(","))):
    try:
      step, scale = item.split(":")
      step, scale = int(step), float(scale)
    except ValueError:
      raise ValueError(f"config.train.lr_steps={text!r}: {item!r} is not STEP:SCALE "
                       f"(e.g. '2000:1.5')") from None
    if step < 0 or not scale > 0:
      raise ValueError(f"config.train.lr_steps={text!r}: {item!r} needs a step >= 0 and a "
                       f"scale > 0")
    scales[step] = scale
  return scales


def scale_by_torch_amsgrad(b1: float = 0.0, b2: float = 0.9,
                           eps: float = 1e-8) -> optax.GradientTransformation:
  """AMSGrad as torch's `Adam(amsgrad=True)` computes it (the official optimiser of the G side).

  torch keeps the running maximum of the raw second moment and bias-corrects that maximum at each
  step; `optax.scale_by_amsgrad` takes the maximum of the already bias-corrected moment, so one
  large early gradient (where the correction is strong) caps its steps for the rest of training.
  State: `optax.ScaleByAmsgradState(count, mu, nu, nu_max)`.
  """
  def init_fn(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return optax.ScaleByAmsgradState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros(),
                                     nu_max=zeros())

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
    nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * jnp.square(g), updates, state.nu)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    bc1, bc2 = 1 - jnp.asarray(b1, jnp.float32) ** t, 1 - jnp.asarray(b2, jnp.float32) ** t
    out = jax.tree.map(lambda m, v: (m / bc1) / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps), mu, nu_max)
    return out, optax.ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def _g_optimizer(t: ml_collections.ConfigDict, schedule: optax.Schedule
                 ) -> optax.GradientTransformation:
  if not t.amsgrad:
    return optax.adam(schedule, b1=t.beta1, b2=t.beta2, eps=t.eps)
  form = t.get("amsgrad_form", "torch")
  if form == "optax":
    return optax.amsgrad(schedule, b1=t.beta1, b2=t.beta2, eps=t.eps)
  if form != "torch":
    raise ValueError(f"amsgrad_form must be 'torch' or 'optax', got {form!r}")
  return optax.chain(scale_by_torch_amsgrad(t.beta1, t.beta2, t.eps),
                     optax.scale_by_learning_rate(schedule))


def path_names(path: tuple) -> tuple[str, ...]:
  """A pytree key path as its names: ('generator', 'to_rgb', 'kernel')."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def path_matches(names: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
  """Whether `names` lie under `pattern` (`STAGE_TRAINABLE` format)."""
  if not names or names[0] != pattern[0]:
    return False
  rest, want = names[1:], pattern[1:]
  if not want:
    return True
  return any(rest[i:i + len(want)] == want for i in range(len(rest) - len(want) + 1))


def trainable_mask(g_params: PyTree, patterns: Sequence[tuple[str, ...]] | None) -> PyTree:
  """A tree like g_params of 'trainable' / 'frozen' labels, for `optax.multi_transform`."""
  def label(path, _):
    names = path_names(path)
    ok = patterns is None or any(path_matches(names, p) for p in patterns)
    return "trainable" if ok else "frozen"
  return jax.tree_util.tree_map_with_path(label, g_params)


def stage_trainable(config: ml_collections.ConfigDict, stage: str
                    ) -> tuple[tuple[str, ...], ...] | None:
  """The G-side parameter paths `stage` trains (`STAGE_TRAINABLE`; the 'full' stage's set
  follows `train.full_params`)."""
  t = train_fields(config)
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
  if stage != "full":
    return STAGE_TRAINABLE[stage]
  choice = t.get("full_params", "all")
  if choice not in ("all", "official"):
    raise ValueError(f"train.full_params must be 'all' or 'official', got {choice!r}")
  return OFFICIAL_FULL_TRAINABLE if choice == "official" else STAGE_TRAINABLE["full"]


def make_optimizers(config: ml_collections.ConfigDict, stage: str | None = None,
                    trainable: Sequence[tuple[str, ...]] | None = None, first_step: int = 0
                    ) -> dict[str, optax.GradientTransformation]:
  """The TTUR optimisers of one training stage.

  Args:
    config: the config (or its `train` part), see `train_config`.
    stage: one of `STAGES`; defaults to `config.train.stage`.
    trainable: overrides the stage's G-side trainable paths (`STAGE_TRAINABLE` format).
    first_step: the run's step at which the stage starts. Optimiser states count from 0 in
      every stage; the learning rates follow the run's step, as `learning_rate_schedules`.

  Returns:
    dict(generator=tx, discriminator=tx). The generator tx expects g_params keyed by network;
    frozen sub-trees get zero updates. In stages that do not train D its tx is `set_to_zero`.
    Equal train configs give the same transformation objects: they are static fields of
    `GANTrainState`, so a second run in one process reuses the compiled train step.
  """
  t = train_fields(config)
  stage = stage or t.stage
  patterns = stage_trainable(t, stage) if trainable is None else tuple(map(tuple, trainable))
  # Which stage runs comes from the arguments; the rest of `t` defines the optimisers.
  fields = {k: v for k, v in t.items() if k not in ("stage", "schedule")}
  return dict(_optimizers(ml_collections.FrozenConfigDict(fields), stage, patterns,
                          int(first_step)))


@functools.lru_cache(maxsize=64)
def _optimizers(t: ml_collections.FrozenConfigDict, stage: str,
                patterns: tuple[tuple[str, ...], ...] | None, first_step: int
                ) -> dict[str, optax.GradientTransformation]:
  schedules = {k: (lambda count, s=s: s(count + first_step)) if first_step else s
               for k, s in learning_rate_schedules(t).items()}

  g_base = _g_optimizer(t, schedules["generator"])
  if patterns is None:
    g_tx = g_base
  else:
    g_tx = optax.multi_transform({"trainable": g_base, "frozen": optax.set_to_zero()},
                                 lambda params: trainable_mask(params, patterns))

  if STAGE_TRAINS_D[stage]:
    d_tx = optax.adam(schedules["discriminator"], b1=t.beta1, b2=t.beta2, eps=t.eps)
  else:
    d_tx = optax.set_to_zero()
  return {"generator": g_tx, "discriminator": d_tx}
