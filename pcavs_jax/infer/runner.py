"""The network on device batches: `FrameDriver` runs PC-AVS on fixed-size frame batches split
across `jax.local_devices()` with a sharded jit (one compilation per batch shape)."""
from __future__ import annotations

import functools
import math

import numpy as np

from pcavs_jax.infer.jobs import PathLike, PreparedJob


def random_variables(model, seed: int = 0) -> dict:
  """Random PC-AVS variables without compiling `model.init` (slow on CPU at 224 px).

  For tests and benchmarks (no trained weights exist yet): generator kernels N(0, 1) (they are
  scaled at run time, equalised learning rate), modulation biases 1, other kernels
  N(0, 1 / fan_in), biases, noise strengths and BatchNorm means 0, scales and variances 1.
  """
  import jax
  from pcavs_jax.models.pcavs import abstract_variables
  abstract = abstract_variables(model)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    keys = [getattr(k, "key", str(k)) for k in path]
    name, shape = keys[-1], leaf.shape
    if name in ("scale", "var"):
      return np.ones(shape, leaf.dtype)
    if name == "kernel" and len(shape) >= 2:
      std = 1.0 if "generator" in keys else 1.0 / math.sqrt(max(1, int(np.prod(shape[:-1]))))
      return (rng.standard_normal(shape) * std).astype(leaf.dtype)
    if name == "bias" and "modulation" in keys:
      return np.ones(shape, leaf.dtype)
    return np.zeros(shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _encode_impl(model, variables, references):
  x = references.astype(np.float32) / 127.5 - 1.0
  out = model.apply(variables, x, method=model.encode_identity)
  return out["id_vector"], out["id_map"]


def _drive_impl(model, variables, id_vector, id_map, mel, pose):
  import jax.numpy as jnp
  x = pose.astype(jnp.float32) / 127.5 - 1.0
  out = model.apply(variables, {"id_vector": id_vector, "id_map": id_map}, mel, x,
                    method=model.drive)
  return jnp.clip(jnp.round((out.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


@functools.lru_cache(maxsize=8)
def jitted(model, which: str):
  """One jitted function per (model, kind), shared by every driver: compiled once per shape."""
  import jax
  impl = _encode_impl if which == "encode" else _drive_impl
  return jax.jit(functools.partial(impl, model))


class FrameDriver:
  """Runs PC-AVS on fixed-size frame batches split across local devices.

  Attributes:
    model: the `PCAVS` module.
    batch_size: frames per call, a multiple of the device count.
    resolution: the model's frame size.
  """

  def __init__(self, model, variables: dict, batch_size: int = 8, devices=None):
    """Places the variables on every device.

    Args:
      model: `PCAVS`.
      variables: its variables.
      batch_size: frames per device per call.
      devices: the devices to split batches across (default `jax.local_devices()`).
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    devices = list(devices or jax.local_devices())
    self.model = model
    self.resolution = int(model.resolution)
    self.num_devices = len(devices)
    self.batch_size = max(1, int(batch_size)) * self.num_devices
    mesh = Mesh(np.asarray(devices), ("batch",))
    self._replicated = NamedSharding(mesh, PartitionSpec())
    self._sharded = NamedSharding(mesh, PartitionSpec("batch"))
    self.variables = jax.device_put(variables, self._replicated)

  def encode_identity(self, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E_i of (N, R, R, 3) uint8 references, averaged: (id_vector, id_map) on the host.

    The references go through one at a time (one compiled shape); E_i averages its outputs
    over references, which is the mean of the per-reference outputs.
    """
    encode = jitted(self.model, "encode")
    outs = [encode(self.variables, r[None]) for r in references]
    return (np.mean([np.asarray(o[0][0]) for o in outs], axis=0),
            np.mean([np.asarray(o[1][0]) for o in outs], axis=0))

  def drive(self, id_vector: np.ndarray, id_map: np.ndarray, mel: np.ndarray,
            pose: np.ndarray):
    """Dispatches one batch (batch_size items); returns the (B, R, R, 3) uint8 device array."""
    import jax
    args = jax.device_put((id_vector, id_map, mel, pose), self._sharded)
    return jitted(self.model, "drive")(self.variables, *args)

  def drive_job(self, job: PreparedJob) -> np.ndarray:
    """Every frame of one prepared job, in memory: (T, R, R, 3) uint8.

    The last batch is padded by repeating the final frame, so one compiled shape serves all.
    """
    id_vector, id_map = self.encode_identity(job.references)
    n, t = self.batch_size, job.num_frames
    ids = np.repeat(id_vector[None], n, 0), np.repeat(id_map[None], n, 0)
    frames = []
    for start in range(0, t, n):
      idx = np.minimum(np.arange(start, start + n), t - 1)
      pose = np.stack([job.pose_frame(int(i)) for i in idx])
      mel = job.windows[idx].astype(np.float32)
      frames.append(np.asarray(self.drive(*ids, mel, pose))[:t - start])
    return np.concatenate(frames)


def load_driver(checkpoint: PathLike, batch_size: int = 8, devices=None) -> FrameDriver:
  """A `FrameDriver` for any checkpoint form `pcavs_jax.checkpoint.load_checkpoint` reads."""
  from pcavs_jax.checkpoint import load_checkpoint
  model, variables = load_checkpoint(checkpoint)
  return FrameDriver(model, variables, batch_size=batch_size, devices=devices)
