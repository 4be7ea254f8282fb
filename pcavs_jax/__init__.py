"""pcavs-jax: PC-AVS talking-face generation in JAX/Flax.

Imports lazily: `import pcavs_jax.data.media` (a preprocessing worker) does not load jax.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_checkpoint"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
  if name == "load_checkpoint":
    return importlib.import_module("pcavs_jax.checkpoint").load_checkpoint
  raise AttributeError(f"module 'pcavs_jax' has no attribute {name!r}")
