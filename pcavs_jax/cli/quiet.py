"""A quiet start: the C++, absl and Python logs of TensorFlow, XLA and Orbax off unless asked for.

TensorFlow 2.21 prints its oneDNN and CPU-feature lines through C++ absl logging at import,
ignoring `TF_CPP_MIN_LOG_LEVEL`, so the first `import tensorflow` runs with file descriptor 2
pointed at /dev/null (an import hook; the library modules import TensorFlow as usual).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
import warnings

_NOISY_PACKAGES = ("tensorflow",)


@contextlib.contextmanager
def stderr_to_devnull():
  """Points file descriptor 2 (C and C++ writers included) at /dev/null for the block."""
  sys.stderr.flush()
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


class _QuietImport(importlib.abc.MetaPathFinder):
  """Finds nothing itself: on the first import of a noisy package, imports it with stderr off."""

  def __init__(self) -> None:
    self._busy = False

  def find_spec(self, name, path=None, target=None):
    if self._busy or name not in _NOISY_PACKAGES:
      return None
    self._busy = True
    try:
      with stderr_to_devnull():
        importlib.import_module(name)
    finally:
      self._busy = False
    logging.getLogger(name).setLevel(logging.ERROR)
    return importlib.util.find_spec(name)   # already in sys.modules: its spec


def set_quiet(verbose: bool) -> None:
  """Silences library logs unless `verbose`. Call before tensorflow or jax is imported."""
  if verbose:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", category=FutureWarning)
  if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietImport())
  from absl import logging as absl_logging
  # Our own INFO lines (training progress) stay; the libraries' (Orbax, TensorFlow) go.
  absl_logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= logging.WARNING or f"{os.sep}pcavs_jax{os.sep}" in r.pathname)
