"""Prints what a checkpoint's pose code and mouth feature carry, and what G's pose and mouth follow.

On SynthTalk's cross-driven set (held-out identities, exact truth):
  python scripts/probe_codes.py --checkpoint WORKDIR --eval-set DIR/cross_driven/eval_set.npz [--step N]

Rows: held-out R^2 of a linear read-out of each truth quantity from E_n's pose code and visual
mouth feature and from E_a's mouth feature; correlation of the generated frames' measured pose
and mouth with the pose source's pose and the audio's mouth (reference fixed), and the slope
(below 1: drawn flattened), and correlation with what the pose source shows (for the mouth: a
leak through the pose code) and with the reference's (reference varying).
Then the sync retrieval top-1 measured beside what mouth readers as precise as those read-outs
score, readers at R^2 0.99, and a perfect reader (`mechanisms.probe_codes`).
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
  from pcavs_jax.evaluate import report as ev_report
  from pcavs_jax.evaluate.mechanisms import probe_codes
  model, variables = load_checkpoint(a.checkpoint, step=a.step, ema=a.ema)
  report = probe_codes(model, variables, eval_sets.load_eval_set(a.eval_set))
  sync = report.pop("sync")
  follows = {k: report.pop(k) for k in ("follows_drivers", "drivers_slope", "follows_pose_source",
                                        "follows_reference")}
  print(ev_report.table(list(report.items()), [(k, k, "{:.2f}") for k in report["pose_code_r2"]]))
  print(ev_report.table(list(follows.items()),
                        [(k, k, "{:.2f}") for k in follows["drivers_slope"]]))
  print(ev_report.table([("sync top-1", sync)], [(k, k, "{:.3f}") for k in sync]))


if __name__ == "__main__":
  main()
