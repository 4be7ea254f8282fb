"""Precise BatchNorm statistics: evaluation then normalises a batch as training did."""
import jax
import numpy as np
import pytest

from configs.default import get_config
from pcavs_jax.infer.runner import random_variables
from pcavs_jax.models.pcavs import build_model
from pcavs_jax.train.precise_bn import precise_batch_stats


def test_precise_stats_make_evaluation_match_training_on_that_batch():
  model = build_model(get_config("variant=tiny").model)
  variables = random_variables(model, 0)
  batch = np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32)
  train_mode, _ = model.apply(variables, batch, train=True, method=model.encode_identity,
                              mutable=["batch_stats"])
  before = model.apply(variables, batch, method=model.encode_identity)
  # One batch given three times: its own statistics.
  precise = precise_batch_stats(model, variables, [batch] * 3)
  after = model.apply(precise, batch, method=model.encode_identity)
  assert not np.allclose(before["id_vector"], train_mode["id_vector"], atol=1e-3)
  # E_i's last stages see 4 frames' statistics: float32 agreement, not bitwise.
  np.testing.assert_allclose(after["id_vector"], train_mode["id_vector"], rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(after["id_map"], train_mode["id_map"], rtol=1e-3, atol=1e-3)
  for name in variables["batch_stats"]:
    if name != "identity_encoder":
      assert precise["batch_stats"][name] is variables["batch_stats"][name]
  assert precise["params"] is variables["params"]
  with pytest.raises(ValueError, match="no batches"):
    precise_batch_stats(model, variables, [])


def test_precise_stats_average_the_batches():
  model = build_model(get_config("variant=tiny").model)
  variables = random_variables(model, 0)
  rng = np.random.default_rng(1)
  a, b = (rng.uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32) for _ in range(2))
  one = lambda x: precise_batch_stats(model, variables, [x])["batch_stats"]["identity_encoder"]
  both = precise_batch_stats(model, variables, [a, b])["batch_stats"]["identity_encoder"]
  jax.tree.map(lambda m, x, y: np.testing.assert_allclose(m, (x + y) / 2, rtol=1e-5, atol=1e-6),
               both, one(a), one(b))
