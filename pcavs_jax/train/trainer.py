"""PC-AVS training: `train_and_evaluate(config, workdir)`.

Set-up, then a loop of pmapped steps (`pcavs_jax.train.steps`), with clu metrics and
TensorBoard summaries (`summaries`), Orbax checkpoints and automatic resume from the workdir
(`checkpointing`); SIGTERM / SIGINT save and exit, agreed across processes; a non-finite loss
stops the run and never reaches a checkpoint.
"""
from __future__ import annotations

import functools
import os
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import jax_utils

from pcavs_jax.models.pcavs import build_discriminator, build_model
from pcavs_jax.train import checkpointing, runtime
from pcavs_jax.train import steps as train_steps
from pcavs_jax.train.config import validate_config
from pcavs_jax.train.optimizers import learning_rate_schedules
from pcavs_jax.train.precise_bn import PreciseBatchStats, training_frames
from pcavs_jax.train.stages import stage_at, stage_first_step, stage_schedule
from pcavs_jax.train.state import GANTrainState, create_train_state
from pcavs_jax.train.summaries import IntervalMetrics, RunLog

# The training probe: called with the G side's {'params', 'batch_stats'} every
# `config.eval_every` steps, it returns flat scalars (e.g. pcavs_jax.evaluate's TrainingProbe).
Probe = Callable[[dict], dict[str, float]]
ProbeFactory = Callable[[ml_collections.ConfigDict, Any], Probe | None]


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf; the last good checkpoint is kept."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       probe: Probe | None = None, probe_factory: ProbeFactory | None = None,
                       on_log: Callable[[int, dict[str, float]], None] | None = None
                       ) -> GANTrainState:
  """Trains PC-AVS as `config` says, resuming from `workdir` if it holds a checkpoint.

  Every `config.eval_every` steps the training probe, when there is one, scores the G side
  (the moving average when kept): TensorBoard `eval/...` and <workdir>/mechanisms.jsonl. It runs
  between steps on the main process, and its time is left out of the logged step rate.

  Args:
    config: the training config (`pcavs_jax.train.config.base_config` fields).
    workdir: checkpoints, summaries, train_history.jsonl and mechanisms.jsonl.
    probe: the training probe, or
    probe_factory: builds it from (config, the eval-mode PC-AVS model) on the main process;
      returns None where there is nothing to probe.
    on_log: sees every logged set of scalars, `on_log(step, scalars)`.

  Returns:
    The final (unreplicated) state.

  Raises:
    NonFiniteLossError: a loss became NaN / Inf (the last checkpoint stays the last good one).
  """
  if probe is not None and probe_factory is not None:
    raise ValueError("give the training probe or a factory of it, not both")
  trainer = Trainer(config, workdir, on_log=on_log)
  if trainer.log.is_main:
    trainer.probe = probe if probe_factory is None else probe_factory(config, trainer.eval_model)
  return trainer.run()


class Trainer:
  """One training run: set-up in `__init__`, then `run`: steps, logs, probes, image grids,
  stage switches and checkpoints, until the last step, a preemption or the time budget."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               on_log: Callable[[int, dict[str, float]], None] | None = None):
    self.t_start = time.time()
    self.config = config
    runtime.maybe_initialize_distributed(config)
    validate_config(config)   # after the distributed start: it counts every process's devices
    cache = runtime.enable_compilation_cache(config.get("compilation_cache_dir", ""))
    logging.info("persistent compilation cache: %s", cache or "off")
    workdir = str(pathlib.Path(workdir).absolute())
    os.makedirs(workdir, exist_ok=True)
    self.log = RunLog(workdir, jax.process_index() == 0, on_log)
    logging.info("process %d/%d, %d local devices of %d: %s", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices())
    self.model = build_model(config.model).clone(bn_axis_name=train_steps.AXIS)
    self.eval_model = build_model(config.model)
    self.discriminator = build_discriminator(config.model)
    self.schedule = stage_schedule(config)
    self.manager = checkpointing.checkpoint_manager(workdir, config)
    self.probe: Probe | None = None
    state = self._first_state(precompile=bool(cache) and not config.get("init_checkpoint")
                              and not config.get("vgg_weights"))
    self.start_step = self.step = int(state.step)
    if self.start_step == 0 and self.log.is_main:
      _log_parameter_overview(state)
    self.vgg_params = _vgg_params(config)
    if len(self.schedule) > 1:
      logging.info("stage schedule %s; starting in stage %r at step %d", self.schedule,
                   self.stage, self.start_step)
    self.sample_fn = runtime.pmapped_sample_step(self.eval_model)
    self.rstate = runtime.replicate(state)
    self.metrics = IntervalMetrics()
    self.lr_schedules = learning_rate_schedules(config)
    minutes = config.get("max_train_minutes")
    self.deadline = time.time() + 60 * minutes if minutes else None
    self.precise_bn = (PreciseBatchStats(self.eval_model)
                       if config.train.get("precise_bn_batches") else None)
    self._precise_frames: np.ndarray | None = None
    self._precise_step: int | None = None

  def _first_state(self, precompile: bool) -> GANTrainState:
    """The state to start from (restored when the workdir holds a checkpoint), the stage it is
    in and its step function; the first batch, the step's compile and the later stages' compiles
    start in the background.

    A checkpoint holds the optimiser states of the stage its step belongs to (a state is
    switched to the next stage before the boundary step's checkpoint is written).
    """
    latest = self.manager.latest_step()
    self.stage = stage_at(self.schedule, latest or 0)
    first_step = stage_first_step(self.schedule, latest or 0)
    self.step_fn = self._step_fn(self.stage)
    self.data = train_batches(self.config, latest or 0)
    make_state = lambda: initial_state(self.config, self.model, self.discriminator, self.stage,
                                       first_step)
    self._pending = runtime.prepare_first_step(self.step_fn, self.data, make_state, precompile)
    # Compiled in the background once the first step is done (not to slow the start).
    later = [(stage, begins) for stage, begins in self.schedule if begins > (latest or 0)]
    self._later_stages = [
        (stage, self._step_fn(stage), functools.partial(
            initial_state, self.config, self.model, self.discriminator, stage, begins))
        for stage, begins in (later if precompile else [])]
    self._compiled_ahead = {}
    state = make_state()
    if latest is not None:
      state = checkpointing.restore_checkpoint(self.manager, state)
      logging.info("resumed from %s at step %d", self.manager.directory, int(state.step))
    return state

  def _step_fn(self, stage: str):
    return runtime.pmapped_train_step(self.model, self.discriminator, self.config, stage)

  def run(self) -> GANTrainState:
    """Trains to `config.num_train_steps`, or until preempted or out of time; saves on the way."""
    from clu import periodic_actions
    c, total = self.config, self.config.num_train_steps
    report = periodic_actions.ReportProgress(num_train_steps=total, writer=self.log.writer)
    self._t_log, self._last_log_step = time.time(), self.start_step
    with checkpointing.PreemptionCheck(self.manager) as preempted:
      while self.step < total:
        batch = self._train_step()
        report(self.step)
        step = self.step
        stop = preempted(step) or self._out_of_time()
        if step % c.log_every == 0 or step == total or stop:
          self._log_scalars()
        if self.probe is not None and c.get("eval_every") and step % c.eval_every == 0:
          self._run_probe()
        if c.get("image_every") and (step % c.image_every == 0 or step == total):
          self.log.samples(step, jax.device_get(jax.tree.map(lambda x: x[0], self.sample_fn(
              self.rstate.g_params, self.rstate.batch_stats["g"], batch))))
        if (stage := stage_at(self.schedule, step)) != self.stage:
          self._switch_stage(stage)
        if step % c.checkpoint_every == 0 or step == total or stop:
          self._save()
        if stop:
          logging.info("stopping at step %d (%s)", step, "max_train_minutes reached"
                       if self._out_of_time(agreed=False) else "preempted")
          break
    for future in self._compiled_ahead.values():   # stages never reached: compile no more
      future.cancel()
    self.log.flush()
    return jax_utils.unreplicate(self.rstate)

  def _train_step(self):
    """Runs the next step (the first on the batch and program prepared in the background);
    returns its batch."""
    if self._pending is not None:
      batch, compiled = self._pending.result()
      self._pending = None
      self.step_fn = compiled or self.step_fn   # the first stage runs the background-compiled program
    else:
      batch = next(self.data)
    kw = {} if self.vgg_params is None else {"vgg_params": self.vgg_params}
    self.rstate, metrics = self.step_fn(self.rstate, batch, **kw)
    self.step += 1
    if self.step == self.start_step + 1:
      jax.block_until_ready(metrics)
      first_step_s = time.time() - self.t_start
      logging.info("first step done %.1f s after the start (set-up, input pipeline, compiles)",
                   first_step_s)
      self.log.writer.write_scalars(self.step, {"time_to_first_step_s": first_step_s})
      self._compiled_ahead = runtime.compile_ahead(self._later_stages, batch)
    self.metrics.add(self.step, metrics)
    return batch

  def _out_of_time(self, agreed: bool = True) -> bool:
    """Whether `config.max_train_minutes` has run out. With several processes, process 0's
    clock decides, at log steps (a collective), so that all stop at the same step."""
    if self.deadline is None:
      return False
    late = time.time() > self.deadline
    if jax.process_count() == 1 or not agreed:
      return late
    if self.step % self.config.log_every:
      return False
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(late)))

  def _checked_averages(self, reset: bool = True) -> dict[str, float]:
    """The averages of the steps since the last log; raises if one is not finite."""
    first = self.metrics.first_step
    values = self.metrics.compute(reset=reset)
    bad = {k: v for k, v in values.items() if not np.isfinite(v)}
    if bad:
      steps = f"step {self.step}" if first == self.step else f"steps {first} to {self.step}"
      raise NonFiniteLossError(
          f"non-finite loss at {steps}: {bad}; stopped, the last good checkpoint in "
          f"{self.manager.directory} (step {self.manager.latest_step()}) is kept")
    return values

  def _log_scalars(self) -> None:
    """The interval's averaged losses, the step rate and the learning rates."""
    scalars = self._checked_averages()
    elapsed = time.time() - self._t_log
    scalars["steps_per_sec"] = (self.step - self._last_log_step) / max(elapsed, 1e-9)
    scalars["examples_per_sec"] = scalars["steps_per_sec"] * self.config.data.batch_size
    for k, schedule in self.lr_schedules.items():
      scalars[f"lr_{k}"] = float(schedule(self.step))
    self.log.train_scalars(self.step, scalars)
    self._t_log, self._last_log_step = time.time(), self.step

  def _run_probe(self) -> None:
    self._estimate_batch_stats()
    t_probe = time.time()
    self.log.probe_measures(self.step, self.probe(_probe_variables(self.rstate)))
    self._t_log += time.time() - t_probe

  def _estimate_batch_stats(self) -> None:
    """E_i's BatchNorm statistics re-estimated for this step's probe and checkpoint, with the
    parameters they evaluate (the moving average when kept), when config.train.precise_bn_batches
    asks; left out of the logged step rate. Training mode never reads them."""
    if self.precise_bn is None or self._precise_step == self.step:
      return
    t0, c = time.time(), self.config
    if self._precise_frames is None:   # drawn once: every estimate averages the same frames
      self._precise_frames = training_frames(c.data_dir, c.train.precise_bn_batches,
                                             c.train.precise_bn_batch_size, c.model.resolution,
                                             seed=c.seed, split=c.data.split)
    stats = self.precise_bn(_probe_variables(self.rstate), self._precise_frames)["batch_stats"]
    self.rstate = self.rstate.replace(
        batch_stats={**self.rstate.batch_stats, "g": runtime.replicate(stats)})
    self._precise_step = self.step
    self._t_log += time.time() - t0

  def _switch_stage(self, stage: str) -> None:
    """The stage's optimisers and step function from the next step on."""
    if self.metrics.first_step is not None:   # the last stage's unlogged steps
      self._log_scalars()
    self.stage = stage
    logging.info("step %d: stage %r begins", self.step, stage)
    self.rstate = runtime.replicate(
        switch_stage(jax_utils.unreplicate(self.rstate), self.config, stage))
    ahead = self._compiled_ahead.pop(stage, None)
    self.step_fn = (ahead.result() if ahead else None) or self._step_fn(stage)

  def _save(self) -> None:
    """Saves the state, once the losses of every step since the last log are finite."""
    self._checked_averages(reset=False)
    self._estimate_batch_stats()
    checkpointing.save_checkpoint(self.manager, jax_utils.unreplicate(self.rstate), self.config)


def _log_parameter_overview(state: GANTrainState) -> None:
  from clu import parameter_overview
  for name, params in state.g_params.items():
    parameter_overview.log_parameter_overview(params, msg=f"{name} parameters")
  parameter_overview.log_parameter_overview(state.d_params, msg="discriminator parameters")


def _vgg_params(config):
  """VGG19's weights replicated for the perceptual loss, or None when config.vgg_weights is ''."""
  if not config.get("vgg_weights"):
    logging.info("VGG19 perceptual loss off: no config.vgg_weights given")
    return None
  from pcavs_jax.convert.vgg import load_vgg19_weights
  logging.info("VGG19 perceptual loss on, weights from %s", config.vgg_weights)
  return runtime.replicate(load_vgg19_weights(config.vgg_weights))


def _probe_variables(rstate) -> dict:
  """The first replica's G-side variables for evaluation (the moving average when kept)."""
  first = lambda tree: jax.device_get(jax.tree.map(lambda x: x[0], tree))
  return {"params": first(rstate.ema_params or rstate.g_params),
          "batch_stats": first(rstate.batch_stats["g"])}


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
    variables = runtime.jitted_init(model)(
        {"params": init_rng, "dropout": init_rng, "noise": init_rng}, image, mel, image)
    d_variables = runtime.jitted_init(discriminator)(d_rng, image)
    g_params = variables["params"]
    stats = {"g": dict(variables.get("batch_stats", {})), "d": dict(d_variables.get("batch_stats", {}))}
    if config.get("init_checkpoint"):
      g_params, stats["g"] = checkpointing.load_generator_side(config.init_checkpoint, g_params, stats["g"])
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


def train_batches(config, start_step: int) -> Iterator[dict[str, np.ndarray]]:
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
