"""The `pcavs-jax` command: one thin module per subcommand under `pcavs_jax.cli`.

Quiet by default: TensorFlow's and XLA's C++ logs and absl's are off, and a bad input or config
ends in one line, `pcavs-jax COMMAND: error: ...`. `--verbose` (anywhere on the line) shows
them all, tracebacks included.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pcavs_jax.cli.quiet import set_quiet

# Subcommand modules, each exposing `register(subparsers)`; imported only when named, so that
# `pcavs-jax convert` never pays for TensorFlow.
_SUBCOMMANDS = {
    "convert": "pcavs_jax.cli.convert",
    "synthtalk": "pcavs_jax.cli.synthtalk",
    "preprocess": "pcavs_jax.cli.preprocess",
    "generate": "pcavs_jax.cli.generate",
    "evaluate": "pcavs_jax.cli.evaluate",
    "evaluate-synthtalk": "pcavs_jax.cli.evaluate_synthtalk",
    "demo": "pcavs_jax.cli.demo",
}
# Subcommands with absl flags of their own: everything after the name is handed over as is.
_ABSL_SUBCOMMANDS = {"train": "pcavs_jax.cli.train"}
VERBOSE_FLAG = "--verbose"


def error_line(command: str, error: BaseException) -> str:
  """The one line a failed subcommand prints."""
  text = " ".join(str(error).split()) or type(error).__name__
  return f"pcavs-jax {command}: error: {text}"


def _parser(command: str | None) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="pcavs-jax", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(VERBOSE_FLAG, action="store_true",
                      help="show library logs and full tracebacks")
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
  argv = list(sys.argv[1:] if argv is None else argv)
  verbose = VERBOSE_FLAG in argv
  argv = [a for a in argv if a != VERBOSE_FLAG]
  set_quiet(verbose)
  command = next((a for a in argv if not a.startswith("-")), None)
  if command in _ABSL_SUBCOMMANDS and argv and argv[0] == command:
    return importlib.import_module(_ABSL_SUBCOMMANDS[command]).main(argv[1:], verbose=verbose)
  parser = _parser(command if command in _SUBCOMMANDS else None)
  args = parser.parse_args(argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 2
  try:
    return int(args.func(args) or 0)
  except (OSError, ValueError) as e:   # bad inputs and configs: InputError, ConfigError, ...
    if verbose:
      raise
    print(error_line(args.command, e), file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
