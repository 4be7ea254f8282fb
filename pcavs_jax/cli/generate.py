"""`pcavs-jax generate` (flags still live in `pcavs_jax.infer.inference`; they move here)."""
from pcavs_jax.infer.inference import register, run  # noqa: F401
