"""`pcavs-jax evaluate` (flags still live in `pcavs_jax.evaluate.videos`; they move here)."""
from pcavs_jax.evaluate.videos import register, run  # noqa: F401
