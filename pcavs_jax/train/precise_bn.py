"""Precise BatchNorm statistics: a network's running mean and variance replaced by the mean of
many batches' own statistics (as pycls' `compute_precise_bn_stats` does for torch).

Training normalises each layer by the current batch; the running averages kept meanwhile
(momentum 0.9: about the last ten batches) are what evaluation divides by. With small batches of
few identities (SynthTalk's 8 references are 4 identities' pairs), they can describe the
population badly enough that some inputs blow a network's output up at evaluation: E_i's identity
vector reached |x| 27-109 (1.2-2.1 for other references) on a third of a run's cross-driven
references, and G drew saturated blobs for them. On that run's checkpoint, SSIM over all
cross-driven triples (seen identities; copy-reference 0.724) was 0.552 as trained; 0.742 with the
statistics averaged over 200 training batches (pairs of references included); 0.767 over 200
batches of 8 random training frames, each of another clip; 0.788 / 0.787 over 50 batches of 32 /
64 such frames (unseen identities: 0.537, 0.712, 0.762, 0.767; copy 0.746). Re-estimating E_n's
and E_a's statistics too changed nothing.

The trainer does this before every probe and checkpoint when `config.train.precise_bn_batches`
is set; `scripts/precise_bn.py` does it to a saved run.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pcavs_jax.models.layers import BN_MOMENTUM


class PreciseBatchStats:
  """Re-estimates one network's BatchNorm statistics; compiled once, called per estimate.

  Args:
    model: the PC-AVS module (eval-mode, no pmap axis).
    network: the submodule whose statistics are replaced.
    method: the model method that runs `network` on a batch (its one input).
  """

  def __init__(self, model, network: str = "identity_encoder", method: str = "encode_identity"):
    self.network = network

    @jax.jit
    def own_stats(params, zero_stats, x):
      if x.dtype == jnp.uint8:   # frames as stored: to [-1, 1], as the input pipeline gives them
        x = x.astype(jnp.float32) / 127.5 - 1.0
      # From zero running statistics, one training-mode update leaves (1 - momentum) x the
      # batch's own mean and variance.
      _, new = model.apply({"params": params, "batch_stats": zero_stats}, x, train=True,
                           method=getattr(model, method), mutable=["batch_stats"])
      return jax.tree.map(lambda s: s / (1.0 - BN_MOMENTUM), new["batch_stats"][network])

    self._own_stats = own_stats

  def __call__(self, variables: Mapping, batches: Iterable[np.ndarray]) -> dict:
    """`variables` ({'params', 'batch_stats'}) with the network's statistics averaged over
    `batches` (inputs of the method: (B, H, W, 3) frames for E_i, uint8 or in [-1, 1]); every
    other network's statistics and all parameters are unchanged."""
    zero = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    total, count = None, 0
    for batch in batches:
      stats = self._own_stats(variables["params"], zero, jnp.asarray(batch))
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
      count += 1
    if not count:
      raise ValueError("precise BatchNorm statistics: no batches given")
    new_stats = dict(variables["batch_stats"])
    new_stats[self.network] = jax.device_get(jax.tree.map(lambda s: s / count, total))
    return {**variables, "batch_stats": new_stats}


def training_frames(data_dir: str, batches: int, batch_size: int, resolution: int,
                    seed: int = 0, split: str = "train") -> np.ndarray:
  """(batches, batch_size, R, R, 3) uint8 random frames of the training split.

  Each frame is of another clip, drawn at random, while the split's clips last (more frames per
  clip beyond that); only the drawn clips' drawn frames are decoded.
  """
  import cv2
  from pcavs_jax.data import records
  count = batches * batch_size
  num_clips = records.read_manifest(data_dir)["splits"].get(split, {}).get("clips")
  if not num_clips:
    num_clips = sum(1 for _ in records.read_records(data_dir, split))
  if not num_clips:
    raise ValueError(f"data_dir {data_dir!r} holds no {split!r} clips to estimate statistics from")
  rng = np.random.default_rng(seed)
  draws = np.concatenate([rng.permutation(num_clips) for _ in range(math.ceil(count / num_clips))])
  per_clip = np.bincount(draws[:count], minlength=num_clips)
  frames = []
  for i, raw in enumerate(records.read_records(data_dir, split)):
    if i >= num_clips or not per_clip[i]:
      continue
    jpegs = records.example_fields(raw)["frames"]
    for t in rng.integers(len(jpegs), size=per_clip[i]):
      frame = records.decode_jpeg(jpegs[t])
      if frame.shape[:2] != (resolution, resolution):
        frame = cv2.resize(frame, (resolution, resolution), interpolation=cv2.INTER_AREA)
      frames.append(frame)
  out = np.stack(frames)[rng.permutation(len(frames))]
  return out.reshape((batches, batch_size) + out.shape[1:])
