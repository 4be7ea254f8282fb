"""Trains PC-AVS: `python -m pcavs_jax.cli.train --config configs/X.py --workdir DIR [--config.a.b=v]`.

The same as `pcavs-jax train ...`. Flags, config and workdir only; the work is in
`pcavs_jax.train.trainer.train_and_evaluate`.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints and summaries go; a run resumes from it.")
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:args]).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep the accelerators for JAX
  from pcavs_jax.train import trainer as train
  logging.info("config:\n%s", FLAGS.config)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def main(argv: list[str] | None = None) -> int:
  """Entry point for `pcavs-jax train` (argv without the program name)."""
  app.run(_main, argv=["pcavs-jax train"] + list(sys.argv[1:] if argv is None else argv))
  return 0


if __name__ == "__main__":
  app.run(_main)
