"""A training process's set-up and compiled programs: multi-process start, the persistent
compilation cache, replication over the local devices, the pmapped train and sample steps, and their
compiles in the background."""
from __future__ import annotations

import concurrent.futures
import functools
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from pcavs_jax.train import steps as train_steps


def maybe_initialize_distributed(config) -> None:
  """`jax.distributed.initialize` when the run spans several processes.

  Reads config.distributed (coordinator_address, num_processes, process_id) or, when those are
  unset, the usual cluster environment (jax auto-detects SLURM / TPU pods / JAX_COORDINATOR_*).
  """
  d = config.get("distributed", None)
  if d is not None and d.get("num_processes", 1) > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=d.coordinator_address,
                               num_processes=d.num_processes, process_id=d.process_id,
                               local_device_ids=d.get("local_device_ids", None))
  elif os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()


def enable_compilation_cache(directory: str = "") -> str | None:
  """Turns on JAX's persistent compilation cache, so a re-run's compiles are read back.

  Args:
    directory: the cache folder; '' is `$PCAVS_CACHE_DIR` or `~/.cache/pcavs_jax/xla` (shared by
      every run of this user), 'none' leaves the cache off.

  Returns:
    the folder in use, or None when off. JAX opens the cache once per process: a later call
    with another folder leaves the first one in use.
  """
  if directory == "none":
    return None
  cache_home = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
  path = pathlib.Path(directory or os.environ.get("PCAVS_CACHE_DIR")
                      or cache_home / "pcavs_jax" / "xla").expanduser()
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  # Every program, however quick to compile: a run's dozens of small ones add up.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return str(path)


def replicate(tree):
  """`tree` copied to every local device, placed as the pmapped step places its outputs
  (`replicated_sharding`), so that the step's second call reuses the first call's program.

  `flax.jax_utils.replicate` names its mesh axis otherwise, and pmap then compiles the step a
  second time for its own outputs.
  """
  sharding = replicated_sharding()
  n = jax.local_device_count()
  def put(x):
    x = jnp.asarray(x)
    return jax.device_put(jnp.broadcast_to(x[None], (n,) + x.shape), sharding)
  return jax.tree.map(put, tree)


def replicated_sharding() -> jax.sharding.NamedSharding:
  """How the pmapped step places its state: split over a mesh of the local devices whose one
  axis is named like the step's pmap axis."""
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (train_steps.AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train_steps.AXIS))


def _compile_for(step_fn, make_state, batch, what: str):
  """`step_fn` compiled for `batch` and the replicated state `make_state` would build (traced
  abstractly, never computed); None when the compile fails (the first call compiles it then)."""
  t = time.time()
  n, sharding = jax.local_device_count(), replicated_sharding()
  try:
    replicated = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((n,) + tuple(x.shape), x.dtype, sharding=sharding),
        jax.eval_shape(make_state))
    compiled = step_fn.lower(replicated, batch).compile()
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("the background compile of the %s failed: %s", what, e)
    return None
  logging.info("%s compiled in the background in %.1f s", what, time.time() - t)
  return compiled


def prepare_first_step(step_fn, data, make_state, compile_step: bool
                       ) -> concurrent.futures.Future:
  """The run's first batch, fetched in a background thread, which then compiles `step_fn` for
  that batch and the replicated state `make_state` would build.

  XLA compiles on one core, so the step's compile overlaps the initialisation's compile and the
  input pipeline's start; the program also goes to the persistent compilation cache.

  Returns:
    a future of (batch, the compiled step or None when not compiled or the compile failed).
  """
  def work():
    batch = next(data)
    return batch, (_compile_for(step_fn, make_state, batch, "train step") if compile_step
                   else None)
  executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  future = executor.submit(work)
  executor.shutdown(wait=False)
  return future


def compile_ahead(later_stages: Sequence[tuple[str, Any, Any]], batch
                  ) -> dict[str, concurrent.futures.Future]:
  """The later stages' train steps, compiled one after another in a background thread while
  the current stage trains, so that a stage switch costs no compile in the loop.

  Args:
    later_stages: (stage, its pmapped step, a function building its state) per later stage, in
      schedule order.
    batch: a batch of the run (its shapes).

  Returns:
    {stage: a future of its compiled step, or None where the compile failed}.
  """
  executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  ahead = {stage: executor.submit(_compile_for, fn, make, batch, f"stage {stage!r} train step")
           for stage, fn, make in later_stages}
  executor.shutdown(wait=False)
  return ahead


def pmapped_train_step(model, discriminator, config: ml_collections.ConfigDict, stage: str):
  """`train_steps.train_step` of `stage` under `jax.pmap`, donating the state.

  The step reads only `config.loss` and `config.train.noise_injection`. Calls in one process with
  equal networks and equal values of those fields get the same pmapped function, so the step
  compiles once.
  """
  step_config = ml_collections.FrozenConfigDict({
      "loss": config.loss,
      "train": {"stage": stage, "noise_injection": config.train.get("noise_injection", True)}})
  return _pmapped_train_step(model, discriminator, step_config)


@functools.lru_cache(maxsize=16)
def _pmapped_train_step(model, discriminator, step_config: ml_collections.FrozenConfigDict):
  return jax.pmap(
      functools.partial(train_steps.train_step, model=model, discriminator=discriminator,
                        config=step_config),
      axis_name=train_steps.AXIS, donate_argnums=(0,))


@functools.lru_cache(maxsize=16)
def pmapped_sample_step(model):
  """`train_steps.sample_step` under `jax.pmap`, built once per network."""
  return jax.pmap(functools.partial(train_steps.sample_step, model=model),
                  axis_name=train_steps.AXIS)


@functools.lru_cache(maxsize=16)
def jitted_init(module):
  """`module.init` in eval mode, jitted once per network configuration."""
  return jax.jit(functools.partial(module.init, train=False))
