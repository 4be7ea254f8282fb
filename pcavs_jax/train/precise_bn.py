"""Precise BatchNorm statistics: a network's running mean and variance replaced by the mean of
many training batches' own statistics (as pycls' `compute_precise_bn_stats` does for torch).

Training normalises each layer by the current batch; the running averages kept meanwhile
(momentum 0.9: about the last ten batches) are what evaluation divides by. With small batches of
few identities (SynthTalk's 8 frames of about 4), they can describe the population badly enough
that some inputs blow a network's output up at evaluation: E_i's identity vector reached |x| 27-109
(1.2-2.1 for other references) on a third of a run's cross-driven references, and G drew
saturated blobs for them. Averaging 200 batches' statistics removed most of it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pcavs_jax.models.layers import BN_MOMENTUM


def precise_batch_stats(model, variables: Mapping, batches: Iterable[np.ndarray], *,
                        network: str = "identity_encoder", method: str = "encode_identity"
                        ) -> dict:
  """`variables` with `network`'s BatchNorm statistics re-estimated over `batches`.

  Args:
    model: the PC-AVS module.
    variables: {'params', 'batch_stats'} (e.g. from `pcavs_jax.checkpoint.load_checkpoint`).
    batches: model inputs of `method`, each a training-size batch (e.g. (B, H, W, 3) frames in
      [-1, 1] for E_i).
    network: the submodule whose statistics are replaced.
    method: the model method that runs `network` on a batch.

  Returns:
    new variables; every other network's statistics and all parameters are unchanged.
  """
  zero = jax.tree.map(jnp.zeros_like, variables["batch_stats"])

  @jax.jit
  def own_stats(params, x):
    # From zero running statistics, one training-mode update leaves (1 - momentum) x the
    # batch's own mean and variance.
    _, new = model.apply({"params": params, "batch_stats": zero}, x, train=True,
                         method=getattr(model, method), mutable=["batch_stats"])
    return jax.tree.map(lambda s: s / (1.0 - BN_MOMENTUM), new["batch_stats"][network])

  total, count = None, 0
  for batch in batches:
    stats = own_stats(variables["params"], jnp.asarray(batch))
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += 1
  if not count:
    raise ValueError("precise_batch_stats: no batches given")
  new_stats = dict(variables["batch_stats"])
  new_stats[network] = jax.device_get(jax.tree.map(lambda s: s / count, total))
  return {**variables, "batch_stats": new_stats}


def training_frames(data_dir: str, batches: int, batch_size: int, resolution: int,
                    seed: int = 0) -> Iterable[np.ndarray]:
  """`batches` batches of `batch_size` random training frames of different clips, in [-1, 1],
  drawn from the first `batches * batch_size` training clips (memory bounded by the draw, not the
  data set)."""
  from pcavs_jax.data import input_pipeline
  clips = input_pipeline.create_eval_clips(data_dir, "train", max_clips=batches * batch_size,
                                           resolution=resolution)
  if len(clips) < batch_size:
    raise ValueError(f"{data_dir}: {len(clips)} training clips, fewer than a batch of {batch_size}")
  rng = np.random.default_rng(seed)
  for _ in range(batches):
    picks = rng.choice(len(clips), batch_size, replace=False)
    frames = [clips[i].frames[rng.integers(clips[i].num_frames)] for i in picks]
    yield np.stack(frames).astype(np.float32) / 127.5 - 1.0
