"""Time per driven frame of PC-AVS inference (network only) at the official size.

A driven frame runs E_n on the pose frame, E_a on the mel window and G (83 GFLOP at 224 px by a
layer count: E_n 12.65, E_a 0.94, G 69.4; the GFLOP/s column uses XLA's count of the compiled
program, right at any --resolution). The identity is encoded once per video, outside the timed
loop, as generation does.

  python scripts/bench_inference.py                      # batch 1, 4, 16, float32, this machine
  python scripts/bench_inference.py --batch 4 --dtype bfloat16
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bench_train import compiled_flops, fastest_call_seconds  # this folder is on sys.path
from pcavs_jax.models.config import model_config
from pcavs_jax.models.pcavs import build_model


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--resolution", type=int, default=224)
  args = parser.parse_args()

  config = model_config(args.resolution)
  config.dtype = args.dtype
  model = build_model(config)
  r = config.resolution
  rng = np.random.default_rng(0)
  image = lambda b: jnp.asarray(rng.uniform(-1, 1, (b, r, r, 3)), jnp.float32)
  mel = lambda b: jnp.asarray(rng.uniform(0, 1, (b, 80, 20)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), image(1), mel(1), image(1))
  identity = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_identity))(variables, image(1))
  drive = jax.jit(lambda v, ident, m, p: model.apply(v, ident, m, p, method=model.drive))

  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, dtype {args.dtype}, {r}x{r}")
  print(f"{'batch':>5} {'s/frame':>9} {'frames/s':>9} {'GFLOP/s':>9} {'compiled GFLOP/frame':>21}")
  for b in args.batch:
    m, p = mel(b), image(b)
    compiled = drive.lower(variables, identity, m, p).compile()
    flops = compiled_flops(compiled) / b / 1e9
    per_frame = fastest_call_seconds(compiled, [variables, identity, m, p], args.repeats) / b
    print(f"{b:5d} {per_frame:9.3f} {1 / per_frame:9.2f} {flops / per_frame:9.1f} {flops:21.1f}")


if __name__ == "__main__":
  main()
