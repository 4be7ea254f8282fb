"""Steps/s and examples/s of the PC-AVS train step (D then G), on synthetic batches.

  python scripts/bench_train.py --config configs/synthtalk.py                 # 1 device
  python scripts/bench_train.py --config configs/synthtalk.py --devices 8     # 8 simulated CPU devices
  python scripts/bench_train.py --config configs/synthtalk.py --mfu           # + FLOPs and utilisation
  python scripts/bench_train.py --config configs/default.py --mfu --batch-size 2   # the 224 px step
  python scripts/bench_train.py --config configs/synthtalk.py --mfu --conv-ceiling # + the convs' own rate

--mfu prints the step's FLOPs (XLA's cost analysis of the compiled step), the achieved GFLOP/s and,
beside them, the matmul rate measured on the same machine: numpy's float32 matrix product on a
CPU, a jnp matrix product in the compute dtype on an accelerator. Their ratio is the utilisation
(MFU against what this machine's matrix unit delivers, not a datasheet peak; --peak-tflops adds
the datasheet ratio).

--conv-ceiling times every convolution and matrix product of the step alone, at its own shapes,
and prints their summed rate against the matmul rate: what the step would reach if it did
nothing but its convolutions, each at the speed XLA runs it in isolation. Narrow networks make
small-channel convolutions, and this is the ceiling their shapes set.

With --devices N on a CPU, XLA is told to expose N host devices (set before jax is imported); the
global batch stays config.data.batch_size, so the figures compare the same work.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _parse() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/synthtalk.py")
  p.add_argument("--devices", type=int, default=1, help="simulated CPU devices (CPU only)")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--batch-size", type=int, default=None)
  p.add_argument("--stage", default=None, help="override config.train.stage")
  p.add_argument("--mfu", action="store_true",
                 help="print FLOPs/step, GFLOP/s and the measured matmul rate beside them")
  p.add_argument("--peak-tflops", type=float, default=0.0,
                 help="also the ratio to this datasheet peak, e.g. 989 (H100 bf16)")
  p.add_argument("--dtype", default=None, help="override config.model.dtype")
  p.add_argument("--conv-ceiling", action="store_true",
                 help="time each convolution and matrix product of the step alone and print their rate")
  return p.parse_args()


def main() -> None:
  args = _parse()
  if args.devices > 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}")

  import jax
  import numpy as np
  from flax import jax_utils
  from ml_collections import config_flags  # noqa: F401  (config files may import it)

  sys.path.insert(0, os.getcwd())
  from pcavs_jax.train import runtime
  from pcavs_jax.train import trainer as train
  from pcavs_jax.train import steps as train_steps
  from pcavs_jax.models.pcavs import build_discriminator, build_model
  from pcavs_jax.train.config import load_config_file

  config = load_config_file(args.config)
  if args.batch_size:
    config.data.batch_size = args.batch_size
  if args.stage:
    config.train.stage = args.stage
  if args.dtype:
    config.model.dtype = args.dtype
  n = jax.local_device_count()
  bs = config.data.batch_size
  if bs % n:
    raise SystemExit(f"batch size {bs} is not divisible by {n} devices")
  model = build_model(config.model).clone(bn_axis_name=train_steps.AXIS)
  disc = build_discriminator(config.model)
  state = jax_utils.replicate(train.initial_state(config, model, disc))
  step = runtime.pmapped_train_step(model, disc, config, config.train.stage)
  r, per = config.model.resolution, bs // n
  rng = np.random.default_rng(0)
  image = lambda *s: rng.uniform(-1, 1, (n, per) + s + (r, r, 3)).astype(np.float32)
  batch = {"target": image(1), "pose_source": image(1), "reference": image(config.data.num_inputs),
           "mel": rng.uniform(0, 1, (n, per, 1, 80, 20)).astype(np.float32),
           "label": rng.integers(0, config.model.num_classes, (n, per)).astype(np.int32)}
  t = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  t = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  dt = (time.perf_counter() - t) / args.steps
  print(f"config {args.config} stage {config.train.stage}: {r}px, global batch {bs}, "
        f"{n} x {jax.devices()[0].device_kind}, dtype {config.model.dtype}")
  print(f"compile {compile_s:.1f} s; {1 / dt:.3f} steps/s, {bs / dt:.2f} examples/s "
        f"({dt * 1000:.0f} ms/step)")
  if args.mfu or args.conv_ceiling:
    rate, how = matmul_rate(config.model.dtype)
  if args.mfu:
    flops = compiled_flops(compiled) * n  # per-device program, all devices
    achieved = flops / dt / 1e9
    print(f"FLOPs/step {flops / 1e9:.2f} GFLOP (compiled cost analysis) | achieved "
          f"{achieved:.1f} GFLOP/s | matmul rate {rate:.1f} GFLOP/s ({how}) | "
          f"utilisation {100 * achieved / rate:.1f} %")
    if args.peak_tflops:
      print(f"MFU: {100 * achieved / 1e3 / args.peak_tflops:.1f} % of {args.peak_tflops} TFLOP/s")
  if args.conv_ceiling:
    gflop, seconds, kinds = contraction_ceiling(step, state, batch, max(args.steps, 10))
    print(f"convolutions and matrix products alone: {kinds} distinct shapes, {gflop:.2f} GFLOP and "
          f"{seconds * 1000:.0f} ms per step, {gflop / seconds:.1f} GFLOP/s = "
          f"{100 * gflop / seconds / rate:.1f} % of the matmul rate; "
          f"{100 * seconds / dt:.0f} % of the step's time")


def contraction_ceiling(step, state, batch, repeats: int) -> tuple[float, float, int]:
  """(GFLOP, seconds, distinct shapes) of the step's convolutions and dot products, each run alone.

  Walks the step's jaxpr (through pmap, jit, vjp and custom rules) for `conv_general_dilated` and
  `dot_general`, compiles each distinct one by itself on random operands of its shapes, and sums
  count x its fastest call and count x FLOPs (XLA's cost analysis). The fastest call of an empty
  program is taken off each, so dispatch does not count against the convolutions.
  """
  import collections
  import jax
  import numpy as np

  counts: collections.Counter = collections.Counter()
  example = {}

  def subjaxprs(value):
    if hasattr(value, "jaxpr") and hasattr(value, "consts"):   # ClosedJaxpr
      yield value.jaxpr
    elif hasattr(value, "eqns"):                                # Jaxpr
      yield value
    elif isinstance(value, (tuple, list)):
      for v in value:
        yield from subjaxprs(v)

  def walk(jaxpr) -> None:
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
        key = (eqn.primitive.name,
               tuple((tuple(v.aval.shape), str(v.aval.dtype)) for v in eqn.invars),
               repr(sorted(eqn.params.items())))
        counts[key] += 1
        example.setdefault(key, eqn)
      for value in eqn.params.values():
        for sub in subjaxprs(value):
          walk(sub)

  walk(jax.make_jaxpr(step)(state, batch).jaxpr)
  rng = np.random.default_rng(0)
  total_flop = total_s = 0.0
  one = jax.device_put(np.zeros(1, np.float32))
  empty = jax.jit(lambda x: x + 1).lower(one).compile()
  dispatch = fastest_call_seconds(empty, [one], repeats * 10)
  for key, count in counts.items():
    eqn = example[key]
    operands = [jax.device_put(rng.standard_normal(v.aval.shape).astype(v.aval.dtype))
                for v in eqn.invars]
    compiled = jax.jit(lambda *xs, e=eqn: e.primitive.bind(*xs, **e.params)).lower(*operands).compile()
    total_s += count * max(fastest_call_seconds(compiled, operands, repeats) - dispatch, 0.0)
    total_flop += count * compiled_flops(compiled)
  return total_flop / 1e9, total_s, len(counts)


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled program, by XLA's cost analysis (NaN where it gives none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def fastest_call_seconds(compiled, operands, repeats: int) -> float:
  """Fastest of `repeats` timed calls of a compiled program (after one warm-up call), in seconds:
  the best case, as a ceiling wants, and steady against the other threads of a busy machine."""
  import jax
  jax.block_until_ready(compiled(*operands))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*operands))
    best = min(best, time.perf_counter() - t)
  return best


def matmul_rate(dtype: str, repeats: int = 10) -> tuple[float, str]:
  """GFLOP/s of a large matrix product's fastest call on this machine: numpy float32 on a CPU (the
  BLAS XLA's dots compete with), jnp in `dtype` on an accelerator."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  rng = np.random.default_rng(0)
  if jax.default_backend() == "cpu":
    n = 2048
    a, product = rng.standard_normal((n, n)).astype(np.float32), lambda x: x @ x
    how = f"numpy float32 {n}^2"
  else:
    n = 8192
    a, product = jnp.asarray(rng.standard_normal((n, n)), dtype), jax.jit(lambda x: x @ x)
    how = f"jnp {dtype} {n}^2"
  return 2 * n ** 3 / fastest_call_seconds(product, [a], repeats) / 1e9, how


if __name__ == "__main__":
  main()
