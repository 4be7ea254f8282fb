"""`pcavs-jax train --config configs/X.py[:args] --workdir DIR [--config.a.b=v ...]`.

Flags, config and workdir only; the work is `pcavs_jax.train.trainer.train_and_evaluate`. The
config is checked first (`pcavs_jax.train.config.validate_config`): a field that does not exist, an
empty or wrong `data_dir`, an unknown stage or a batch that does not divide over the devices ends
the command with one line naming the setting.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from pcavs_jax.train.config import ConfigError, check_override, load_config_file, validate_config

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints and summaries go; a run resumes from it.")
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:args]).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _config_spec_and_overrides(argv: list[str]) -> tuple[str | None, list[str]]:
  """The `--config` file spec and the `--config.<path>` overrides named on the command line."""
  spec, overrides = None, []
  for i, arg in enumerate(argv):
    name, eq, value = arg.partition("=")
    if name == "--config":
      spec = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    elif name.startswith("--config."):
      overrides.append(name[len("--config."):])
  return spec, overrides


def check_command_line(argv: list[str]) -> None:
  """Raises ConfigError for a config file that is missing or an override of a field it lacks."""
  spec, overrides = _config_spec_and_overrides(argv)
  if spec is None:
    return   # absl reports the missing required flag
  config = load_config_file(spec)
  for path in overrides:
    check_override(config, path)


def _main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep the accelerators for JAX
  validate_config(FLAGS.config)
  from pcavs_jax.evaluate.probe import training_probe
  from pcavs_jax.train import trainer
  logging.info("config:\n%s", FLAGS.config)
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, probe_factory=training_probe)


def main(argv: list[str] | None = None, verbose: bool = False) -> int:
  """Entry point for `pcavs-jax train` (argv without the program name)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    check_command_line(argv)
    app.run(_main, argv=["pcavs-jax train"] + argv)
  except (ConfigError, OSError, ValueError) as e:
    if verbose:
      raise
    from pcavs_jax.cli.main import error_line
    print(error_line("train", e), file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
