"""`pcavs-jax evaluate --synthtalk`: SynthTalk's exact measures of generated video files, beside
the stored baselines."""
import argparse
import json

import pytest

from pcavs_jax import infer
from pcavs_jax.cli import evaluate as evaluate_cli
from pcavs_jax.cli import generate as generate_cli
from pcavs_jax.data import media
from pcavs_jax.evaluate import scoring


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # random weights: nothing to read
def test_synthtalk_exact_measures(checkpoint, tmp_path, capsys):
  """The demo's flow: `generate --synthtalk SET` then `evaluate --synthtalk SET`."""
  from pcavs_jax.data.synthtalk import eval_sets
  from data_pipeline.synthtalk import generate as st_generate
  clips = list(st_generate.generate_clips(0, [0, 1, 2], 1, 12, 64))
  eval_set = eval_sets.build_eval_set(clips, 2)
  es_path = eval_sets.save_eval_set(eval_set, tmp_path / "cross_driven" / "eval_set.npz")
  baselines = scoring.baseline_scores(eval_set, names=("copy_reference",))
  (tmp_path / "cross_driven" / "baselines.json").write_text(json.dumps(baselines))
  # The truth itself, as frames (lossless): every exact error is zero.
  for tr in eval_set.triples:
    for i, frame in enumerate(tr.truth_frames):
      media.write_image(tmp_path / "truth_as_generated" / tr.triple_id / f"{i:06d}.png", frame)
  perfect = scoring.evaluate_synthtalk(tmp_path / "truth_as_generated", es_path)
  assert perfect["metrics"]["mouth_err"] == 0 and perfect["metrics"]["pose_err"] == 0
  assert perfect["metrics"]["psnr"] == 100 and set(perfect["baselines"]) == {"truth",
                                                                              "copy_reference"}
  jobs = list(infer.eval_set_jobs(eval_set, 64))
  assert [j.name for j in jobs] == ["x000", "x001"] and jobs[0].num_frames == 12

  parser = argparse.ArgumentParser()
  sub = parser.add_subparsers()
  generate_cli.register(sub)
  evaluate_cli.register(sub)
  gen = tmp_path / "gen"
  args = parser.parse_args(["generate", "--checkpoint", str(checkpoint), "--synthtalk",
                            str(es_path), "--out", str(gen), "--panel", "--no-progress"])
  assert args.func(args) == 0
  assert media.probe(gen / "x000.mp4").has_audio and (gen / "x001_panel.mp4").exists()
  (gen / "x001.mp4").unlink()   # one triple left without a video
  args = parser.parse_args(["evaluate", "--generated", str(gen), "--synthtalk", str(es_path)])
  assert args.func(args) == 0
  report = json.loads((gen / "evaluation.json").read_text())
  assert report["missing"] == ["x001"] and list(report["per_video"]) == ["x000"]
  for key in ("ssim", "psnr", "mouth_err", "pose_err", "identity_err", "sync", "cpbd"):
    assert key in report["metrics"]
  table = capsys.readouterr().out
  assert "baseline copy_reference" in table and "mouth err" in table
  assert "1 of 2 triples have no generated video" in table


def test_scoring_reports_the_one_ssim_and_psnr():
  """SynthTalk's scores use `metrics.ssim` / `metrics.psnr`: means over frames."""
  import numpy as np
  from data_pipeline.synthtalk import generate as st_generate
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.evaluate import metrics
  eval_set = eval_sets.build_eval_set(list(st_generate.generate_clips(0, [0, 1, 2], 1, 8, 64)), 1)
  triple = eval_set.triples[0]
  truth = triple.truth_frames
  # Noise that grows over the clip: the per-frame mean and the whole-clip PSNR differ.
  rng = np.random.default_rng(0)
  sigma = np.linspace(1, 30, len(truth))[:, None, None, None]
  noisy = np.clip(truth + rng.normal(0, 1, truth.shape) * sigma, 0, 255).astype(np.uint8)
  s = scoring.score_triple(noisy, triple)
  mse = np.mean((noisy.astype(float) - truth) ** 2, axis=(1, 2, 3))
  assert s["psnr"] == metrics.psnr(noisy, truth)
  assert s["psnr"] == pytest.approx(np.mean(10 * np.log10(255 ** 2 / mse)), rel=1e-6)
  assert s["psnr"] > 10 * np.log10(255 ** 2 / mse.mean()) + 1   # not the whole-clip PSNR
  assert s["ssim"] == metrics.ssim(noisy, truth)
