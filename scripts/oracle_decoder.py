"""How far PC-AVS's identity encoder + generator get on SynthTalk when every code is exact.

An estimate of the ceiling under the SynthTalk targets, not a model to use: E_i reads the
reference as in PC-AVS,
but E_n, E_a and D are left out. G's style is the identity vector plus a learned linear
embedding of the *true* pose (yaw, pitch, roll, tx, ty) and mouth (open, width) of the target,
and the only loss is pixel L1. Nothing has to be discovered, no adversary slows G down, and a
step costs about a third of the full step (10 against 3.5 steps/s at batch 8 on 2 CPU cores).
What this reaches in a budget is therefore a generous estimate of what the full model can reach
in it (not a strict bound: the full model's adversarial and feature-matching terms sharpen what
L1 alone blurs).

  python scripts/oracle_decoder.py --data-dir DIR --eval-set DIR/cross_driven/eval_set.npz \
      [DIR/cross_driven/seen_set.npz] --minutes 28 [--generator-width 0.25] [--lr 2e-3] \
      [--no-codes]

`--no-codes` zeroes the codes, so G draws from the identity alone: what the exact pose and mouth
add to the scores.

Prints one JSON line per evaluation: step, wall seconds (the evaluations' included, which
count against --minutes), training L1 and, per eval set (keyed by its file name), the
cross-driven summary (SSIM, PSNR, mouth and pose ratios to their baselines) on its triples, each
driven by its reference frame 0, with the true pose of its pose clip and the true mouth of its
audio, beside the set's copy-reference SSIM.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

TRUTH_KEYS = ("yaw", "pitch", "roll", "tx", "ty", "mouth_open", "mouth_width")
# The half-ranges of SynthTalk's head motion (data_pipeline.synthtalk.generate.POSE_RANGE),
# so every code is about unit size; the mouth keys are already in [0, 1].
CODE_SCALE = (30.0, 20.0, 15.0, 0.03, 0.03, 1.0, 1.0)
REPORTED = ("ssim", "psnr", "mouth_ratio", "pose_ratio", "identity_err", "abs_lag",
            "analysis_failures")


def _parse() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data-dir", required=True, help="SynthTalk record folder (its train split)")
  p.add_argument("--eval-set", required=True, nargs="+",
                 help="SynthTalk OUT/cross_driven/eval_set.npz (and seen_set.npz, ...)")
  p.add_argument("--config", default="configs/synthtalk.py", help="model widths and data settings")
  p.add_argument("--minutes", type=float, default=28.0)
  p.add_argument("--lr", type=float, default=2e-3, help="Adam rate (the config's G side: 2e-3)")
  p.add_argument("--b1", type=float, default=0.0, help="Adam beta1 (PC-AVS: 0; beta2 is 0.9)")
  p.add_argument("--generator-width", type=float, default=0.0, help="0: the config's width")
  p.add_argument("--code-dim", type=int, default=76, help="style length of the code embedding "
                 "(76 = the config's mouth 64 + pose 12)")
  p.add_argument("--no-codes", action="store_true",
                 help="zero every code: G styled by the identity alone (ablation)")
  p.add_argument("--eval-every", type=int, default=2000)
  p.add_argument("--grid", default="", help="PNG path: reference | generated | truth of the "
                 "first set's first 4 triples at frames 0, 25, 49, written at the end")
  return p.parse_args()


def main() -> None:
  args = _parse()
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  sys.path.insert(0, os.getcwd())
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.evaluate import scoring
  from pcavs_jax.data import input_pipeline
  from pcavs_jax.models.identity_encoder import IdentityEncoder
  from pcavs_jax.models.generator import Generator, generator_channels, start_size
  from pcavs_jax.models.pcavs import identity_dim
  from pcavs_jax.train.config import load_config_file

  config = load_config_file(args.config)
  m = config.model
  res, g_width = m.resolution, args.generator_width or m.generator_width or m.width

  class OracleDecoder(nn.Module):
    """E_i on the reference; G styled by (identity vector, embedded true codes)."""

    @nn.compact
    def __call__(self, reference, codes, train: bool = False):
      identity = IdentityEncoder(
          width=m.width, num_classes=m.num_classes, map_size=start_size(res),
          map_channels=generator_channels(res, g_width)[0][1], name="identity_encoder")(
              reference, train=train)
      code = nn.Dense(args.code_dim, name="code_embed")(codes)
      style = jnp.concatenate([identity["id_vector"], code], -1)
      return Generator(resolution=res, width=g_width,
                       style_dim=identity_dim(m.width) + args.code_dim,
                       name="generator")(style, identity["id_map"], train=train)

  model = OracleDecoder()
  code_scale = np.zeros(len(CODE_SCALE), np.float32) if args.no_codes else 1.0 / np.asarray(
      CODE_SCALE, np.float32)
  image = jnp.zeros((1, res, res, 3))
  variables = model.init({"params": jax.random.key(config.seed), "noise": jax.random.key(1)},
                         image, jnp.zeros((1, len(TRUTH_KEYS))))
  params, stats = variables["params"], variables["batch_stats"]
  tx = optax.adam(args.lr, b1=args.b1, b2=0.9)
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, stats, opt_state, reference, codes, target, rng):
    def loss_fn(p):
      out, new = model.apply({"params": p, "batch_stats": stats}, reference, codes, True,
                             mutable=["batch_stats"], rngs={"noise": rng})
      return jnp.mean(jnp.abs(out - target)), new["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  draw = jax.jit(lambda params, stats, reference, codes: model.apply(
      {"params": params, "batch_stats": stats}, reference, codes))
  sets = {os.path.basename(path).removesuffix(".npz"): eval_sets.load_eval_set(path)
          for path in args.eval_set}
  # The baselines stored beside each set, computed only where a set was written without them.
  baselines = {name: scoring.read_baselines(path) or scoring.baseline_scores(sets[name])
               for name, path in zip(sets, args.eval_set)}
  generated = {name: {} for name in sets}
  # Each triple's inputs, built once: reference frame 0 repeated, and its codes.
  inputs = {name: {t.triple_id: (
      np.repeat(t.reference_frames[:1], t.num_frames, 0).astype(np.float32) / 127.5 - 1,
      np.stack([t.truth[k] for k in TRUTH_KEYS], -1) * code_scale) for t in s.triples}
      for name, s in sets.items()}

  def evaluate(params, stats) -> dict:
    out = {}
    for name, eval_set in sets.items():
      for triple_id, (reference, codes) in inputs[name].items():
        generated[name][triple_id] = np.asarray(draw(params, stats, reference, codes))
      summary = scoring.score(generated[name], eval_set, value_range=(-1.0, 1.0))
      summary.update(scoring.target_ratios(summary, baselines[name]))
      out[name] = {k: round(float(v), 4) for k, v in summary.items() if k in REPORTED}
      out[name]["copy_reference_ssim"] = round(float(baselines[name]["copy_reference"]["ssim"]), 4)
    return out

  config.data.augment_pose_source = False   # no pose source is read
  batches = input_pipeline.numpy_iterator(input_pipeline.create_train_dataset(
      config, args.data_dir, seed=config.seed, local_device_count=1))
  start, step, loss = time.time(), 0, float("nan")
  while time.time() - start < 60 * args.minutes:
    batch = next(batches)
    codes = np.stack([batch["truth"][k][0, :, 0] for k in TRUTH_KEYS], -1) * code_scale
    params, stats, opt_state, loss = train_step(
        params, stats, opt_state, batch["reference"][0, :, 0], codes, batch["target"][0, :, 0],
        jax.random.key(step))
    step += 1
    if step % args.eval_every == 0:
      print(json.dumps({"step": step, "seconds": round(time.time() - start), "l1": float(loss),
                        **evaluate(params, stats)}), flush=True)
  print(json.dumps({"final_step": step, "seconds": round(time.time() - start), "l1": float(loss),
                    **evaluate(params, stats)}), flush=True)
  if args.grid:
    import imageio.v3 as iio
    rows = []
    name, eval_set = next(iter(sets.items()))
    for t in eval_set.triples[:4]:
      frames = scoring.to_uint8(generated[name][t.triple_id], res, (-1.0, 1.0))
      rows += [np.concatenate([t.reference_frames[0], frames[f], t.truth_frames[f]], 1)
               for f in (0, 25, 49)]
    iio.imwrite(args.grid, np.concatenate(rows, 0))


if __name__ == "__main__":
  main()
