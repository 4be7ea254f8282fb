"""Prints what a checkpoint's pose code and mouth feature carry, and what G's pose follows.

On SynthTalk's cross-driven set (held-out identities, exact truth):
  python scripts/probe_codes.py --checkpoint WORKDIR --eval-set DIR/cross_driven/eval_set.npz [--step N]

Rows: held-out R^2 of a linear read-out of each truth quantity from E_n's pose code and visual
mouth feature; correlation of the generated frames' measured pose with the pose source's pose
(reference fixed) and with the reference's pose (reference varying).
"""
from __future__ import annotations

import argparse


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="training workdir or exported checkpoint")
  p.add_argument("--eval-set", required=True, help="SynthTalk OUT/cross_driven/eval_set.npz")
  p.add_argument("--step", type=int, default=None, help="a workdir's step (default: latest)")
  p.add_argument("--no-ema", dest="ema", action="store_false",
                 help="the trained parameters, not their moving average")
  a = p.parse_args()
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.checkpoint import load_checkpoint
  from pcavs_jax.evaluate.mechanisms import probe_codes
  model, variables = load_checkpoint(a.checkpoint, step=a.step, ema=a.ema)
  report = probe_codes(model, variables, eval_sets.load_eval_set(a.eval_set))
  keys = list(report["pose_code_r2"])
  print(f"{'':22s}" + "".join(f"{k:>11s}" for k in keys))
  for name, row in report.items():
    print(f"{name:22s}" + "".join(f"{row[k]:11.2f}" if k in row else f"{'':11s}" for k in keys))


if __name__ == "__main__":
  main()
