"""The seen / unseen report of a checkpoint (cross-driven generation, baselines, mechanisms), its
table and JSON, and the training probe that logs the same measures."""
import json
import pathlib

import numpy as np
import pytest

from data_pipeline.synthtalk import generate
from pcavs_jax.data.synthtalk import eval_sets
from pcavs_jax.evaluate import cross_driven, probe, scoring
from pcavs_jax.evaluate import report as ev_report

RES = 64


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


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # random weights: little to read
def test_seen_and_unseen_report_and_training_probe(sets, checkpoint, tmp_path):
  report = cross_driven.evaluate_all(str(checkpoint), str(sets / "eval_set.npz"), batch_size=4)
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
  table = ev_report.summary_table(report)
  assert "seen identities" in table and "unseen identities" in table and "sync_top1" in table
  written = cross_driven.write_report(report, tmp_path / "r.json", str(sets / "eval_set.npz"))
  assert "generated" not in written and "seen" in json.loads((tmp_path / "r.json").read_text())

  from pcavs_jax.checkpoint import load_checkpoint
  model, variables = load_checkpoint(str(checkpoint))
  training_probe = probe.TrainingProbe(model, str(sets), num_triples=1, batch_size=4)
  scalars = training_probe(variables)
  for key in ("seen/sync_top1", "seen/identity_top1", "unseen/pose_code_r2", "unseen/ssim",
              "seen/pose_ratio", "seen/copy_reference_ssim"):
    assert key in scalars and isinstance(scalars[key], float), key
  # The probe's one triple scores as the full report's first triple.
  assert scalars["seen/ssim"] == pytest.approx(report["per_triple"]["seen"]["x000"]["ssim"])
