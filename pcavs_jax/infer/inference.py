"""Deprecated alias of `pcavs_jax.infer`: the former one-file module is now the package's modules.

Kept only while `tests/conftest.py`, `tests/evaluate/test_evaluation.py` and
`pcavs_jax/evaluate/mechanisms.py` still import `pcavs_jax.infer.inference`; delete it once they
import from `pcavs_jax.infer`. The `generate` flags are in `pcavs_jax.cli.generate`.
"""
from pcavs_jax.infer import __all__, __getattr__  # noqa: F401  (the package's lazy names)
