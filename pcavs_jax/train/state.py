"""The GAN train state of PC-AVS: parameters, optimiser states and statistics as one pytree.

The optimisers of each stage are built by `pcavs_jax.train.optimizers`; the stages and their
schedule are in `pcavs_jax.train.stages`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pcavs_jax.train.optimizers import make_optimizers, path_matches, path_names, stage_trainable
from pcavs_jax.train.stages import GNetworks, train_fields

PyTree = Any


@flax.struct.dataclass
class GANTrainState:
  """Everything a PC-AVS train step reads and writes, as one pytree.

  Attributes:
    step: number of completed train steps (one D update then one G update each).
    g_params: G-side params keyed by network: 'identity_encoder' (E_i), 'nonidentity_encoder'
      (E_n), 'audio_encoder' (E_a), 'generator' (G).
    d_params: the multiscale discriminator's params.
    g_opt_state: optimiser state of g_tx.
    d_opt_state: optimiser state of d_tx.
    batch_stats: mutable collections, {'g': {network: batch_stats}, 'd': {...}} (BatchNorm
      statistics on the G side, spectral-norm vectors on the D side).
    rng: the base PRNG key; steps fold in the step and the device index.
    ema_params: moving average of g_params (same structure), or {} when ema_decay is 0.
    g_tx: generator-side optimiser (static).
    d_tx: discriminator optimiser (static).
    ema_decay: the moving average's decay (static; 0: no average kept).
  """

  step: jax.Array
  g_params: PyTree
  d_params: PyTree
  g_opt_state: optax.OptState
  d_opt_state: optax.OptState
  batch_stats: PyTree
  rng: jax.Array
  ema_params: PyTree
  g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)

  def apply_d_gradients(self, grads: PyTree) -> "GANTrainState":
    """Updates d_params and d_opt_state (the step counter is left to the caller)."""
    updates, opt_state = self.d_tx.update(grads, self.d_opt_state, self.d_params)
    return self.replace(d_params=optax.apply_updates(self.d_params, updates),
                        d_opt_state=opt_state)

  def apply_g_gradients(self, grads: PyTree) -> "GANTrainState":
    """Updates g_params and g_opt_state (the step counter is left to the caller)."""
    updates, opt_state = self.g_tx.update(grads, self.g_opt_state, self.g_params)
    return self.replace(g_params=optax.apply_updates(self.g_params, updates),
                        g_opt_state=opt_state)

  def update_ema(self, step: jax.Array) -> "GANTrainState":
    """Moves ema_params towards g_params after train step `step` (0-based).

    The decay ramps up as min(ema_decay, (1 + step) / (10 + step)), so the average soon
    forgets the random initialisation.
    """
    if not self.ema_decay:
      return self
    decay = jnp.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), self.ema_params, self.g_params)
    return self.replace(ema_params=ema)


def _check_trainable_paths(g_params: Mapping, patterns: Sequence[tuple[str, ...]] | None) -> None:
  """Raises when a trainable pattern names nothing: a silent match failure would freeze it all."""
  if patterns is None:
    return
  leaves = [path_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(g_params)]
  for pattern in patterns:
    if not any(path_matches(names, pattern) for names in leaves):
      below = sorted(g_params.get(pattern[0], {})) if isinstance(g_params, Mapping) else []
      raise ValueError(f"trainable path {pattern} matches no parameter; "
                       f"{pattern[0]!r} holds {below or 'nothing'}")


def create_train_state(g_params: Mapping[str, PyTree], d_params: PyTree,
                       batch_stats: Mapping[str, PyTree] | None,
                       config: ml_collections.ConfigDict, stage: str | None = None,
                       rng: jax.Array | None = None,
                       trainable: Sequence[tuple[str, ...]] | None = None,
                       ema_params: Mapping[str, PyTree] | None = None,
                       first_step: int = 0) -> GANTrainState:
  """Builds the optimisers of `stage` and a fresh `GANTrainState` at step 0.

  Args:
    g_params: {network: params} for some of 'identity_encoder', 'nonidentity_encoder',
      'audio_encoder', 'generator'.
    d_params: discriminator params.
    batch_stats: {'g': ..., 'd': ...} (missing keys become {}), or None.
    config: the config (or its `train` part).
    stage: one of `STAGES`; defaults to `config.train.stage`.
    rng: base PRNG key; defaults to PRNGKey(0).
    trainable: overrides the stage's G-side trainable paths.
    ema_params: the moving average to carry on with (default: a copy of g_params); unused
      when `train.ema_decay` is 0.
    first_step: the run's step at which `stage` starts (its learning rates follow the run's
      step; see `make_optimizers`).

  Returns:
    the state.
  """
  unknown = set(g_params) - set(GNetworks)
  if unknown or not g_params:
    raise ValueError(f"g_params must be keyed by networks {GNetworks}; got {sorted(g_params)}")
  t = train_fields(config)
  stage = stage or t.stage
  txs = make_optimizers(t, stage, trainable, first_step)
  patterns = stage_trainable(t, stage) if trainable is None else tuple(map(tuple, trainable))
  _check_trainable_paths(g_params, patterns)
  g_params = dict(g_params)
  batch_stats = dict(batch_stats or {})
  batch_stats = {"g": batch_stats.pop("g", {}), "d": batch_stats.pop("d", {}), **batch_stats}
  ema_decay = float(t.get("ema_decay", 0.0))
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"train.ema_decay must be in [0, 1), got {ema_decay}")
  if not ema_decay:
    ema_params = {}
  # The optimiser states (and the average's copy) in one program: run eagerly, their hundreds
  # of per-leaf operations each dispatch (and at a first run compile) a program of their own.
  @jax.jit
  def init_states(g_params, d_params):
    ema = jax.tree.map(jnp.copy, g_params) if ema_decay and ema_params is None else None
    return txs["generator"].init(g_params), txs["discriminator"].init(d_params), ema

  g_opt_state, d_opt_state, ema_copy = init_states(g_params, d_params)
  if ema_decay and ema_params is None:
    ema_params = ema_copy   # a copy made inside the program: the step donates the state
  return GANTrainState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      d_params=d_params,
      g_opt_state=g_opt_state,
      d_opt_state=d_opt_state,
      batch_stats=batch_stats,
      rng=jax.random.PRNGKey(0) if rng is None else rng,
      ema_params=dict(ema_params),
      g_tx=txs["generator"],
      d_tx=txs["discriminator"],
      ema_decay=ema_decay,
  )


def gradient_norms(grads: Mapping[str, PyTree]) -> dict[str, jax.Array]:
  """Global L2 norm of the gradients of each top-level entry (network) of `grads`."""
  return {name: optax.global_norm(g) for name, g in grads.items()}

