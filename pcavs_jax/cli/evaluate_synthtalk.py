"""`pcavs-jax evaluate-synthtalk` (flags still live in `pcavs_jax.evaluate.mechanisms`; they move here)."""
from pcavs_jax.evaluate.mechanisms import register, run  # noqa: F401
