"""`pcavs-jax preprocess` (flags still live in `data_pipeline.preprocess`; they move here)."""
from data_pipeline.preprocess import register, run  # noqa: F401
