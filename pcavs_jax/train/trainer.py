"""PC-AVS training: `train_and_evaluate(config, workdir)`.

Set-up, then a loop of pmapped steps (`pcavs_jax.train.steps`), with clu metrics and
TensorBoard summaries, Orbax checkpoints and automatic resume from the workdir; SIGTERM /
SIGINT save and exit; a non-finite loss stops the run and never reaches a checkpoint.
"""
from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import jax_utils

from pcavs_jax.train import steps as train_steps
from pcavs_jax.models.pcavs import build_discriminator, build_model
from pcavs_jax.train.optimizers import learning_rate_schedules
from pcavs_jax.train.stages import stage_at, stage_first_step, stage_schedule
from pcavs_jax.train.state import GANTrainState, create_train_state

from pcavs_jax.checkpoint import TRAIN_CHECKPOINT_DIR as CHECKPOINT_DIR


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf; the last good checkpoint is kept."""


class _StopSignal:
  """Turns SIGTERM / SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: signals cannot be caught here
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: saving a checkpoint and stopping", signum)
    self.received = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


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


def prepare_first_step(step_fn, data, make_state, compile_step: bool
                       ) -> concurrent.futures.Future:
  """The run's first batch, fetched in a background thread, which then compiles `step_fn` for
  that batch and the replicated state `make_state` would build (traced abstractly, never
  computed).

  XLA compiles on one core, so the step's compile overlaps the initialisation's compile and the
  input pipeline's start; the program also goes to the persistent compilation cache.

  Returns:
    a future of (batch, the compiled step or None when not compiled or the compile failed).
  """
  def work():
    batch = next(data)
    compiled = None
    if compile_step:
      t = time.time()
      n, sharding = jax.local_device_count(), replicated_sharding()
      state = jax.eval_shape(make_state)
      replicated = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct((n,) + tuple(x.shape), x.dtype, sharding=sharding), state)
      try:
        compiled = step_fn.lower(replicated, batch).compile()
        logging.info("train step compiled in the background in %.1f s", time.time() - t)
      except Exception as e:  # pylint: disable=broad-except  (the first call compiles it then)
        logging.warning("the background compile of the train step failed: %s", e)
    return batch, compiled
  executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  future = executor.submit(work)
  executor.shutdown(wait=False)
  return future


def initial_state(config, model, discriminator, stage: str | None = None,
                  first_step: int = 0) -> GANTrainState:
  """A fresh state at step 0 (on the host's CPU) with the optimisers of `stage` (default
  config.train.stage), which starts at the run's step `first_step`, optionally from a
  pretrained checkpoint."""
  rng = jax.random.key(config.seed)
  init_rng, d_rng, state_rng = jax.random.split(rng, 3)
  r = config.model.resolution
  image = jnp.zeros((1, r, r, 3), jnp.float32)
  mel = jnp.zeros((1, 80, 20), jnp.float32)
  cpu = jax.local_devices(backend="cpu")[0]
  with jax.default_device(cpu):
    variables = _jitted_init(model)(
        {"params": init_rng, "dropout": init_rng, "noise": init_rng}, image, mel, image)
    d_variables = _jitted_init(discriminator)(d_rng, image)
    g_params = variables["params"]
    stats = {"g": dict(variables.get("batch_stats", {})), "d": dict(d_variables.get("batch_stats", {}))}
    if config.get("init_checkpoint"):
      g_params, stats["g"] = _load_init(config.init_checkpoint, g_params, stats["g"])
    return create_train_state(g_params, d_variables["params"], stats, config, stage=stage,
                              rng=state_rng, first_step=first_step)


def switch_stage(state: GANTrainState, config, stage: str) -> GANTrainState:
  """The state carried into `stage`: same step, parameters, statistics and rng; the stage's
  optimisers with fresh states (as the paper's stages are separate trainings); the G-side
  moving average goes on."""
  fresh = create_train_state(state.g_params, state.d_params, state.batch_stats, config,
                             stage=stage, rng=state.rng, ema_params=state.ema_params,
                             first_step=int(state.step))
  return fresh.replace(step=state.step)


def _load_init(path: str, g_params, g_stats):
  """Initialises the G side from any checkpoint `load_checkpoint` reads (e.g. converted official)."""
  from pcavs_jax.checkpoint import load_checkpoint
  _, variables = load_checkpoint(path)
  shapes = lambda t: jax.tree.map(lambda x: x.shape, t)
  if shapes(variables["params"]) != shapes(g_params):
    raise ValueError(f"init_checkpoint {path} does not match config.model")
  logging.info("initialised the generator side from %s", path)
  return variables["params"], variables.get("batch_stats", g_stats)


def checkpoint_manager(workdir: str, config):
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


def train_batches(config, start_step: int):
  """Device batches for steps start_step, start_step + 1, ...

  The data order is re-seeded every `config.data_reseed_every` steps (default: the checkpoint
  interval) by folding the segment's first step into the data seed. A run resumed from any
  checkpoint therefore sees exactly the batches an uninterrupted run sees; a resume from a
  mid-segment (preemption) checkpoint skips the segment's consumed batches first.
  """
  from pcavs_jax.data import input_pipeline
  every = config.get("data_reseed_every") or config.checkpoint_every
  step = start_step
  while True:
    segment = (step // every) * every
    batches = input_pipeline.create_train_iterator(config, config.data_dir, seed=config.seed,
                                                   start_step=segment)
    for _ in range(step - segment):
      next(batches)
    for _ in range(segment + every - step):
      yield next(batches)
    step = segment + every


def _image_grid(samples: dict[str, np.ndarray], max_rows: int = 4) -> np.ndarray:
  """Rows of reference | pose source | generated | target, as one uint8 image."""
  cols = [samples[k][:max_rows] for k in ("reference", "pose_source", "fake_audio", "target")]
  rows = np.concatenate(cols, axis=2)             # side by side
  grid = np.concatenate(list(rows), axis=0)       # stacked
  return np.clip((grid + 1) * 127.5, 0, 255).astype(np.uint8)


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
def _pmapped_sample_step(model):
  """`train_steps.sample_step` under `jax.pmap`, built once per network."""
  return jax.pmap(functools.partial(train_steps.sample_step, model=model),
                  axis_name=train_steps.AXIS)


@functools.lru_cache(maxsize=16)
def _jitted_init(module):
  """`module.init` in eval mode, jitted once per network configuration."""
  return jax.jit(functools.partial(module.init, train=False))


def _probe_variables(rstate) -> dict:
  """The first replica's G-side variables for evaluation (the moving average when kept)."""
  first = lambda tree: jax.device_get(jax.tree.map(lambda x: x[0], tree))
  return {"params": first(rstate.ema_params or rstate.g_params),
          "batch_stats": first(rstate.batch_stats["g"])}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       on_log=None) -> GANTrainState:
  """Trains PC-AVS as `config` says, resuming from `workdir` if it holds a checkpoint.

  Every `config.eval_every` steps, when SynthTalk evaluation sets are found
  (`mechanisms.training_probe`), the mechanism measures are logged (TensorBoard `eval/...`,
  <workdir>/mechanisms.jsonl); the probe runs between steps and its time is left out of the
  logged step rate. `on_log(step, scalars)`, when given, sees every logged set of scalars.

  Returns:
    The final (unreplicated) state.

  Raises:
    NonFiniteLossError: a loss became NaN / Inf (the last checkpoint stays the last good one).
  """
  from clu import metric_writers, parameter_overview, periodic_actions

  t_start = time.time()
  maybe_initialize_distributed(config)
  cache = enable_compilation_cache(config.get("compilation_cache_dir", ""))
  logging.info("persistent compilation cache: %s", cache or "off")
  workdir = str(pathlib.Path(workdir).absolute())
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  logging.info("process %d/%d, %d local devices of %d: %s", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices())

  model = build_model(config.model).clone(bn_axis_name=train_steps.AXIS)
  eval_model = build_model(config.model)
  discriminator = build_discriminator(config.model)
  schedule = stage_schedule(config)
  manager = checkpoint_manager(workdir, config)
  # A checkpoint holds the optimiser states of the stage its step belongs to (a state is
  # switched to the next stage before the boundary step's checkpoint is written).
  latest = manager.latest_step()
  stage = stage_at(schedule, latest or 0)
  first_step = stage_first_step(schedule, latest or 0)
  make_step_fn = lambda stage: pmapped_train_step(model, discriminator, config, stage)
  step_fn = make_step_fn(stage)
  data = train_batches(config, latest or 0)
  # The first batch and the step's compile, in a background thread while the state is built.
  precompile = bool(cache) and not config.get("init_checkpoint") and not config.get("vgg_weights")
  pending = prepare_first_step(
      step_fn, data, lambda: initial_state(config, model, discriminator, stage, first_step),
      precompile)
  state = initial_state(config, model, discriminator, stage, first_step)
  if latest is not None:
    state = restore_checkpoint(manager, state)
    logging.info("resumed from %s at step %d", manager.directory, int(state.step))
  start_step = int(state.step)
  if start_step == 0 and is_main:
    for name, params in state.g_params.items():
      parameter_overview.log_parameter_overview(params, msg=f"{name} parameters")
    parameter_overview.log_parameter_overview(state.d_params, msg="discriminator parameters")

  vgg_params = None
  if config.get("vgg_weights"):
    from pcavs_jax.convert.vgg import load_vgg19_weights
    vgg_params = replicate(load_vgg19_weights(config.vgg_weights))
    logging.info("VGG19 perceptual loss on, weights from %s", config.vgg_weights)
  else:
    logging.info("VGG19 perceptual loss off: no config.vgg_weights given")

  if len(schedule) > 1:
    logging.info("stage schedule %s; starting in stage %r at step %d", schedule, stage, start_step)
  sample_fn = _pmapped_sample_step(eval_model)
  from pcavs_jax.evaluate import mechanisms
  probe = mechanisms.training_probe(config, eval_model) if is_main else None
  rstate = replicate(state)
  del state

  schedules = learning_rate_schedules(config)
  report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer)
  total = config.num_train_steps
  deadline = (time.time() + 60 * config.max_train_minutes) if config.get("max_train_minutes") else None
  history: list[dict[str, float]] = []
  acc: dict[str, float] = {}
  n_acc = 0
  t_log = time.time()
  step = start_step
  with _StopSignal() as stop:
    while step < total:
      if pending is not None:
        batch, compiled = pending.result()
        pending = None
        step_fn = compiled or step_fn   # the first stage runs the background-compiled program
      else:
        batch = next(data)
      rstate, metrics = step_fn(rstate, batch) if vgg_params is None else step_fn(
          rstate, batch, vgg_params=vgg_params)
      step += 1
      if step == start_step + 1:
        jax.block_until_ready(metrics)
        first_step_s = time.time() - t_start
        logging.info("first step done %.1f s after the start (set-up, input pipeline, compiles)",
                     first_step_s)
        writer.write_scalars(step, {"time_to_first_step_s": first_step_s})
      report(step)
      m = jax.device_get(jax.tree.map(lambda x: x[0], metrics)) if (
          step % config.log_every == 0 or step == total or stop.received) else None
      if m is not None:
        if not bool(m.pop("all_finite")):
          bad = {k: float(v) for k, v in m.items() if not np.isfinite(v)}
          raise NonFiniteLossError(
              f"non-finite loss at step {step}: {bad}; stopped, the last good checkpoint in "
              f"{manager.directory} (step {manager.latest_step()}) is kept")
        elapsed = time.time() - t_log
        steps_done = step - (history[-1]["step"] if history else start_step)
        scalars = {k: float(v) for k, v in m.items()}
        scalars["steps_per_sec"] = steps_done / max(elapsed, 1e-9)
        scalars["examples_per_sec"] = scalars["steps_per_sec"] * config.data.batch_size
        for k, sched in schedules.items():
          scalars[f"lr_{k}"] = float(sched(step))
        writer.write_scalars(step, scalars)
        history.append({"step": step, **scalars})
        if is_main:  # the curves as JSON lines, readable while the run goes on
          with open(os.path.join(workdir, "train_history.jsonl"), "a") as f:
            f.write(json.dumps(history[-1]) + "\n")
        t_log = time.time()
        if on_log is not None:
          on_log(step, scalars)
      if probe is not None and step % config.eval_every == 0:
        t_probe = time.time()
        measures = probe(_probe_variables(rstate))
        writer.write_scalars(step, {f"eval/{k}": v for k, v in measures.items()})
        with open(os.path.join(workdir, "mechanisms.jsonl"), "a") as f:
          f.write(json.dumps({"step": step, **measures}) + "\n")
        if on_log is not None:
          on_log(step, measures)
        t_log += time.time() - t_probe
      if config.get("image_every") and (step % config.image_every == 0 or step == total):
        samples = jax.device_get(jax.tree.map(
            lambda x: x[0], sample_fn(rstate.g_params, rstate.batch_stats["g"], batch)))
        writer.write_images(step, {"reference|pose|generated|target": _image_grid(samples)[None]})
      if (next_stage := stage_at(schedule, step)) != stage:
        stage = next_stage
        logging.info("step %d: stage %r begins", step, stage)
        rstate = replicate(switch_stage(jax_utils.unreplicate(rstate), config, stage))
        step_fn = make_step_fn(stage)
      out_of_time = deadline is not None and time.time() > deadline
      if (step % config.checkpoint_every == 0 or step == total or stop.received or out_of_time):
        if m is None:  # never write a state whose losses were not checked
          m = jax.device_get(jax.tree.map(lambda x: x[0], metrics))
          if not bool(m["all_finite"]):
            raise NonFiniteLossError(f"non-finite loss at step {step}; the last good checkpoint "
                                     f"(step {manager.latest_step()}) is kept")
        save_checkpoint(manager, jax_utils.unreplicate(rstate), config)
      if stop.received or out_of_time:
        logging.info("stopping at step %d (%s)", step,
                     "signal" if stop.received else "max_train_minutes reached")
        break
  writer.flush()
  return jax_utils.unreplicate(rstate)
