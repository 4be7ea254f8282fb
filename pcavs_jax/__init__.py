"""pcavs-jax: PC-AVS talking-face generation in JAX/Flax."""
