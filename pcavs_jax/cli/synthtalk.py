"""`pcavs-jax synthtalk` (flags still live in `data_pipeline.synthtalk.cli`; they move here)."""
from data_pipeline.synthtalk.cli import register, run  # noqa: F401
