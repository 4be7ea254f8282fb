"""The mechanism measures of `evaluate-synthtalk` and of the training probe: sync retrieval and
lag from their definitions, the held-out linear read-out, pose-code and identity read-outs of
exact codes."""
import numpy as np
import pytest

from data_pipeline.synthtalk import generate
from pcavs_jax.data.synthtalk import eval_sets
from pcavs_jax.evaluate import mechanisms

RES = 64


def _features(n: int = 6, t: int = 30, f: int = 16, seed: int = 0) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(t, f)) for _ in range(n)]


def test_sync_retrieval_of_synced_lagged_and_random_features():
  visual = _features(9)
  clips = [f"c{i}" for i in range(9)]
  exact = mechanisms.sync_retrieval(visual, visual, clips)
  assert exact == {"sync_top1": 1.0, "sync_lag": 0.0, "sync_lag0": 1.0}
  # audio[t] is visual[t + 2]: the mouth moves two frames after the audio.
  late = mechanisms.sync_retrieval([v[:-2] for v in visual], [v[2:] for v in visual], clips)
  assert late["sync_lag"] == 2.0
  shifted = mechanisms.sync_retrieval([v[2:] for v in visual], [v[:-2] for v in visual], clips)
  assert shifted["sync_lag"] == -late["sync_lag"]
  noise = mechanisms.sync_retrieval(visual, _features(9, seed=1), clips)
  assert noise["sync_top1"] < 0.3        # chance 1/8
  # Candidates sharing the audio clip are not negatives: with one audio clip, nothing to rank.
  assert np.isnan(mechanisms.sync_retrieval(visual[:2], visual[:2], ["a", "a"])["sync_top1"])


def test_sync_ceiling_counts_negatives_with_the_same_mouth():
  closed = np.zeros((4, 2))
  moving = [np.stack([np.linspace(0.1, 0.9, 4) + 0.01 * i, np.full(4, 0.5)], 1) for i in range(3)]
  clips = ["a", "b", "c", "d"]
  assert mechanisms.sync_ceiling(moving + [moving[0] + 0.5], clips) == 1.0
  # Two clips closed throughout: each frame of either ties with the other (score 1/2).
  assert mechanisms.sync_ceiling([closed, closed] + moving[:2], clips) == pytest.approx(0.75)


def test_reader_top1_falls_from_exact_to_chance_with_the_readers_r2():
  rng = np.random.default_rng(0)
  mouths = [rng.uniform(0, 1, (40, 2)) for _ in range(9)]
  clips = [f"c{i}" for i in range(9)]
  top1 = [mechanisms.reader_top1(mouths, clips, r2, r2) for r2 in (1.0, 0.99, 0.9, 0.0)]
  assert top1[0] == 1.0 and top1[0] > top1[1] > top1[2] > top1[3]
  assert top1[3] < 0.25      # chance 1/8
  # One exact side is better than two noisy ones.
  assert mechanisms.reader_top1(mouths, clips, 1.0, 0.9) > top1[2]


def test_mechanisms_of_exact_codes():
  """Codes that carry the truth read out as R^2 1 and top-1 1."""
  clips = list(generate.generate_clips(0, list(range(6)), 1, 10, RES, first_clip=4))
  eval_set = eval_sets.build_eval_set(clips, 6, seen=True)
  mixing = np.random.default_rng(0).normal(size=(3, 12))
  pose = [np.stack([t.truth[k] for k in ("yaw", "pitch", "roll")], 1) @ mixing
          for t in eval_set.triples]
  mouths = [np.stack([t.truth["mouth_open"], t.truth["mouth_width"]], 1) for t in eval_set.triples]
  codes = {"visual_mouth": mouths, "audio_mouth": mouths, "pose_code": pose,
           "class_scores": [(t.reference_label, np.eye(8)[[t.reference_label] * 5])
                            for t in eval_set.triples]}
  m = mechanisms.mechanism_measures(codes, eval_set)
  assert m["pose_code_r2"] == pytest.approx(1.0, abs=1e-2)
  assert m["identity_top1"] == 1.0 and m["sync_lag"] == 0.0


def test_heldout_r2_reads_linear_codes_and_not_noise():
  rng = np.random.default_rng(0)
  truth = rng.normal(size=(300, 2))
  groups = np.arange(300) // 50     # six groups of rows
  mixed = truth @ rng.normal(size=(2, 6)) + 0.01 * rng.normal(size=(300, 6))
  np.testing.assert_allclose(mechanisms.heldout_r2(mixed, truth, groups), 1.0, atol=1e-2)
  noise = rng.normal(size=(300, 6))
  assert np.all(mechanisms.heldout_r2(noise, truth, groups) < 0.1)
  # One target carried, one not.
  half = np.concatenate([truth[:, :1], noise], axis=1)
  r2 = mechanisms.heldout_r2(half, truth, groups)
  assert r2[0] > 0.95 and r2[1] < 0.1
  # A code that only names its group (an identity, not the pose) reads nothing of a held-out
  # group, even where the groups' means differ: each group is read by a fit on the others.
  offsets = truth + 3.0 * rng.normal(size=(6, 2))[groups]
  assert np.all(mechanisms.heldout_r2(np.eye(6)[groups], offsets, groups) < 0.05)
  # Fewer than 3 groups: three folds of rows.
  np.testing.assert_allclose(mechanisms.heldout_r2(mixed, truth, np.zeros(300, int)), 1.0, atol=1e-2)
