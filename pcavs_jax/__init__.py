"""pcavs-jax: PC-AVS talking-face generation in JAX/Flax."""
from pcavs_jax.checkpoint import load_checkpoint

__all__ = ["load_checkpoint"]
__version__ = "0.1.0"
