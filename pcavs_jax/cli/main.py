"""The `pcavs-jax` command: a thin layer of subcommands over the library."""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, each exposing `register(subparsers)`; imported only when named, so that
# `pcavs-jax convert` never pays for TensorFlow.
_SUBCOMMANDS = {
    "convert": "pcavs_jax.cli.convert",
    "synthtalk": "pcavs_jax.cli.synthtalk",
    "preprocess": "pcavs_jax.cli.preprocess",
    "generate": "pcavs_jax.cli.generate",
    "evaluate": "pcavs_jax.cli.evaluate",
    "evaluate-synthtalk": "pcavs_jax.cli.evaluate_synthtalk",
}


# Subcommands with absl flags of their own: everything after the name is handed over as is.
_ABSL_SUBCOMMANDS = {"train": "pcavs_jax.cli.train"}


def _parser(command: str | None) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="pcavs-jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name in _ABSL_SUBCOMMANDS:
    sub.add_parser(name, help=f"(absl flags: pcavs-jax {name} --help)")
  for name, module in _SUBCOMMANDS.items():
    if command in (None, name):
      importlib.import_module(module).register(sub)
    else:
      sub.add_parser(name, help=f"(see pcavs-jax {name} --help)")
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  command = next((a for a in argv if not a.startswith("-")), None)
  if command in _ABSL_SUBCOMMANDS and argv and argv[0] == command:
    return importlib.import_module(_ABSL_SUBCOMMANDS[command]).main(argv[1:])
  parser = _parser(command if command in _SUBCOMMANDS else None)
  args = parser.parse_args(argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 2
  return int(args.func(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
