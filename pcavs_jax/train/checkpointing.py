"""Training checkpoints (Orbax, <workdir>/checkpoints/<step>) and the preemption check that says,
the same way on every process, when to save and stop."""
from __future__ import annotations

import pathlib
import signal

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pcavs_jax.checkpoint import TRAIN_CHECKPOINT_DIR as CHECKPOINT_DIR
from pcavs_jax.train.state import GANTrainState


def checkpoint_manager(workdir: str, config):
  """The run's Orbax manager: keeps `config.max_to_keep` checkpoints, saves synchronously."""
  import orbax.checkpoint as ocp
  options = ocp.CheckpointManagerOptions(max_to_keep=config.max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(pathlib.Path(workdir).absolute() / CHECKPOINT_DIR,
                               options=options, item_names=("state", "config"))


def _state_tree(state: GANTrainState) -> dict:
  tree = {"step": state.step, "g_params": state.g_params, "d_params": state.d_params,
          "g_opt_state": state.g_opt_state, "d_opt_state": state.d_opt_state,
          "batch_stats": state.batch_stats, "rng": jax.random.key_data(state.rng)}
  if state.ema_params:
    tree["ema_params"] = state.ema_params
  return tree


def save_checkpoint(manager, state: GANTrainState, config) -> None:
  """Writes `state` (unreplicated) and the config as the checkpoint of step `state.step`."""
  import orbax.checkpoint as ocp
  step = int(state.step)
  tree = jax.tree.map(np.asarray, _state_tree(state))
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                             config=ocp.args.JsonSave(config.to_dict())), force=True)
  manager.wait_until_finished()


def restore_checkpoint(manager, template: GANTrainState, step: int | None = None) -> GANTrainState:
  """Restores into the structure of `template` (an abstract target keeps optax states typed)."""
  import orbax.checkpoint as ocp
  step = manager.latest_step() if step is None else step
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                          _state_tree(template))
  tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
  return template.replace(step=jnp.asarray(tree["step"]), g_params=tree["g_params"],
                          d_params=tree["d_params"], g_opt_state=tree["g_opt_state"],
                          d_opt_state=tree["d_opt_state"], batch_stats=tree["batch_stats"],
                          rng=jax.random.wrap_key_data(jnp.asarray(tree["rng"])),
                          ema_params=tree.get("ema_params") or {})


def load_generator_side(path: str, g_params, g_stats):
  """The G side's (params, batch_stats) from any checkpoint `load_checkpoint` reads (e.g. a
  converted official one), for `config.init_checkpoint`."""
  from pcavs_jax.checkpoint import load_checkpoint
  _, variables = load_checkpoint(path)
  shapes = lambda t: jax.tree.map(lambda x: x.shape, t)
  if shapes(variables["params"]) != shapes(g_params):
    raise ValueError(f"init_checkpoint {path} does not match config.model")
  logging.info("initialised the generator side from %s", path)
  return variables["params"], variables.get("batch_stats", g_stats)


class PreemptionCheck:
  """Whether to save and stop after a step, on SIGTERM / SIGINT, agreed by every process.

  Several processes: JAX's preemption service (started by `jax.distributed.initialize`) takes
  SIGTERM on any process and the processes agree on a step, at which
  `CheckpointManager.reached_preemption` is true on all of them, so that none stops while
  another waits in a collective. SIGINT is passed on as SIGTERM. One process: a signal handler
  sets a flag that the next check reads.
  """

  def __init__(self, manager):
    self._manager = manager
    self._coordinated = jax.process_count() > 1
    self.received: int | None = None
    self._previous = {}

  def __enter__(self) -> "PreemptionCheck":
    # With several processes SIGTERM stays with JAX's service (a Python handler would replace it).
    signals = (signal.SIGINT,) if self._coordinated else (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: signals cannot be caught here
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: saving a checkpoint and stopping", signum)
    self.received = signum
    if self._coordinated:
      signal.raise_signal(signal.SIGTERM)   # to JAX's preemption service

  def __call__(self, step: int) -> bool:
    """Whether to save and stop after `step`; with several processes, call it at every step."""
    if self._coordinated:
      return self._manager.reached_preemption(step)
    return self.received is not None

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
