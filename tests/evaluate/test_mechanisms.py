"""The mechanism measures of `evaluate-synthtalk` and of the training probe: sync retrieval and
lag from their definitions, pose-code and identity read-outs of exact codes, and the seen /
unseen report of a checkpoint."""
import json
import pathlib

import numpy as np
import pytest

import inference_testutil as util
from data_pipeline.synthtalk import generate
from pcavs_jax.data.synthtalk import eval_sets
from pcavs_jax.evaluate import scoring
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


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> pathlib.Path:
  """A cross_driven folder with unseen (test ids 3-5) and seen (held-out clips of ids 0-2)
  sets of 10 frames, with the baselines the ratios need."""
  folder = tmp_path_factory.mktemp("st") / "cross_driven"
  unseen = eval_sets.build_eval_set(list(generate.generate_clips(0, [3, 4, 5], 1, 10, RES)), 3)
  seen = eval_sets.build_eval_set(
      list(generate.generate_clips(0, [0, 1, 2], 1, 10, RES, first_clip=4)), 3, seen=True)
  for name, eval_set in (("unseen", unseen), ("seen", seen)):
    path = eval_sets.save_eval_set(eval_set, folder / eval_sets.SET_FILES[name][0])
    baselines = scoring.baseline_scores(eval_set, names=("static_mouth", "reference_pose",
                                                         "copy_reference"), include_truth=False)
    eval_sets.baselines_path(path).write_text(json.dumps(baselines))
  return folder


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


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # random weights: little to read
def test_seen_and_unseen_report_and_training_probe(sets, tmp_path):
  checkpoint = util.tiny_checkpoint(tmp_path / "ckpt")
  report = mechanisms.evaluate_all(str(checkpoint), str(sets / "eval_set.npz"), batch_size=4)
  assert {"seen", "unseen"} <= set(report) and set(report["mechanisms"]) == {"seen", "unseen"}
  for name in ("seen", "unseen"):
    assert {"model", "copy_reference", "static_mouth", "reference_pose"} <= set(report[name])
    for row in report[name].values():
      assert {"ssim", "pose_ratio", "mouth_ratio"} <= set(row)
    assert report[name]["static_mouth"]["mouth_ratio"] == pytest.approx(1.0)
    assert report["generated"][name]["x000"].shape == (10, RES, RES, 3)
    assert 0.0 <= report["mechanisms"][name]["sync_top1"] <= 1.0
  assert np.isnan(report["mechanisms"]["unseen"]["identity_top1"])
  assert 0.0 <= report["mechanisms"]["seen"]["identity_top1"] <= 1.0
  table = mechanisms.summary_table(report)
  assert "seen identities" in table and "unseen identities" in table and "sync_top1" in table
  written = mechanisms.write_report(report, tmp_path / "r.json", str(sets / "eval_set.npz"))
  assert "generated" not in written and "seen" in json.loads((tmp_path / "r.json").read_text())

  from pcavs_jax.checkpoint import load_checkpoint
  model, variables = load_checkpoint(str(checkpoint))
  probe = mechanisms.TrainingProbe(model, str(sets), num_triples=1, batch_size=4)
  scalars = probe(variables)
  for key in ("seen/sync_top1", "seen/identity_top1", "unseen/pose_code_r2", "unseen/ssim",
              "seen/pose_ratio", "seen/copy_reference_ssim"):
    assert key in scalars and isinstance(scalars[key], float), key
  # The probe's one triple scores as the full report's first triple.
  assert scalars["seen/ssim"] == pytest.approx(report["per_triple"]["seen"]["x000"]["ssim"])


def test_demo_progress_bar_shows_step_stage_losses_and_measures(capsys):
  from configs import synthtalk
  from pcavs_jax.cli.demo import TrainingProgress
  config = synthtalk.get_config("minutes=1,identity_steps=10,sync_steps=10")
  progress = TrainingProgress(config)
  progress(5, {"identity_ce": 2.5, "steps_per_sec": 12.0})
  assert "stage=identity" in str(progress.bar) and "id=2.5" in str(progress.bar)
  progress(25, {"g_loss": 150.0, "d_loss": 1.5, "steps_per_sec": 3.0})
  assert "stage=full" in str(progress.bar) and "G=150" in str(progress.bar)
  progress(25, {"seen/sync_top1": 0.5, "seen/ssim": 0.7, "probe_seconds": 3.0})
  progress.close()
  err = capsys.readouterr()
  assert "seen/sync_top1 0.5" in err.out + err.err and "probe_seconds" not in err.out + err.err
