"""PC-AVS networks (flax.linen, NHWC)."""
