"""Precise BatchNorm statistics: evaluation then normalises a batch as training did."""
import jax
import numpy as np
import pytest

from configs.default import get_config
from pcavs_jax.infer.runner import random_variables
from pcavs_jax.models.pcavs import build_model
from pcavs_jax.train.precise_bn import PreciseBatchStats, training_frames


def test_precise_stats_make_evaluation_match_training_on_that_batch():
  model = build_model(get_config("variant=tiny").model)
  variables = random_variables(model, 0)
  batch = np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32)
  train_mode, _ = model.apply(variables, batch, train=True, method=model.encode_identity,
                              mutable=["batch_stats"])
  before = model.apply(variables, batch, method=model.encode_identity)
  # One batch given three times: its own statistics.
  precise = PreciseBatchStats(model)(variables, [batch] * 3)
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
    PreciseBatchStats(model)(variables, [])


def test_precise_stats_average_the_batches():
  model = build_model(get_config("variant=tiny").model)
  variables = random_variables(model, 0)
  rng = np.random.default_rng(1)
  a, b = (rng.uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32) for _ in range(2))
  precise = PreciseBatchStats(model)
  one = lambda x: precise(variables, [x])["batch_stats"]["identity_encoder"]
  both = precise(variables, [a, b])["batch_stats"]["identity_encoder"]
  jax.tree.map(lambda m, x, y: np.testing.assert_allclose(m, (x + y) / 2, rtol=1e-5, atol=1e-6),
               both, one(a), one(b))


def test_stored_frames_give_the_statistics_of_their_model_inputs():
  """uint8 frames as stored are normalised to [-1, 1] as the input pipeline does."""
  model = build_model(get_config("variant=tiny").model)
  variables = random_variables(model, 0)
  frames = np.random.default_rng(2).integers(0, 256, (2, 4, 64, 64, 3), dtype=np.uint8)
  precise = PreciseBatchStats(model)
  # Float32 agreement: XLA may fuse the division differently inside the step.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
               precise(variables, frames)["batch_stats"],
               precise(variables, frames.astype(np.float32) / 127.5 - 1.0)["batch_stats"])


def test_training_frames_are_random_frames_of_distinct_clips(random_records):
  from pcavs_jax.data import records
  clips = list(records.read_clips(random_records, "train"))
  frames = training_frames(random_records, 2, 2, 64, seed=0)
  assert frames.shape == (2, 2, 64, 64, 3) and frames.dtype == np.uint8
  # Each drawn frame is one of the training frames, and (as there are enough clips) the four
  # come from four different clips.
  owner = [next(i for i, c in enumerate(clips) for f in c.frames if np.array_equal(f, x))
           for x in frames.reshape((-1, 64, 64, 3))]
  assert len(set(owner)) == 4, owner
  np.testing.assert_array_equal(frames, training_frames(random_records, 2, 2, 64, seed=0))
  assert not np.array_equal(frames, training_frames(random_records, 2, 2, 64, seed=1))
  # More frames than clips: every clip gives some.
  many = training_frames(random_records, len(clips), 2, 64, seed=0)
  assert many.shape[:2] == (len(clips), 2)
