"""Re-estimates E_i's BatchNorm statistics of a checkpoint over training batches (precise BN)
and prints the SynthTalk sets' generation and mechanism measures before and after.

  python scripts/precise_bn.py --checkpoint WORKDIR --data-dir DATA [--batches 50] [--batch-size 64]

DATA is the run's SynthTalk folder (its train records and cross_driven/ sets); every triple of
each set is scored. Nothing is written: the figures tell whether E_i's running statistics are
what holds a run back (`pcavs_jax.train.precise_bn`). Runs trained with
`config.train.precise_bn_batches` already hold re-estimated statistics.
"""
from __future__ import annotations

import argparse

KEYS = ("ssim", "pose_ratio", "mouth_ratio", "copy_reference_ssim", "identity_top1")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="training workdir or exported checkpoint")
  p.add_argument("--data-dir", required=True, help="SynthTalk folder: train records + cross_driven/")
  p.add_argument("--step", type=int, default=None, help="a workdir's step (default: latest)")
  p.add_argument("--batches", type=int, default=50)
  p.add_argument("--batch-size", type=int, default=64, help="frames per batch")
  a = p.parse_args()
  import pathlib
  from pcavs_jax.checkpoint import load_checkpoint
  from pcavs_jax.evaluate import report as ev_report
  from pcavs_jax.evaluate.probe import TrainingProbe
  from pcavs_jax.train.precise_bn import PreciseBatchStats, training_frames
  model, variables = load_checkpoint(a.checkpoint, step=a.step)
  probe = TrainingProbe(model, str(pathlib.Path(a.data_dir) / "cross_driven"), num_triples=None)
  precise = PreciseBatchStats(model)(variables, training_frames(
      a.data_dir, a.batches, a.batch_size, model.resolution))
  rows = []
  for name, v in (("running statistics", variables), ("precise statistics", precise)):
    out = probe(v)
    rows.append((name, {f"{s}/{k}": out.get(f"{s}/{k}", float("nan"))
                        for s in ("seen", "unseen") for k in KEYS}))
  print(ev_report.table(rows, [(k, k, "{:.3f}") for k in rows[0][1]]))


if __name__ == "__main__":
  main()
