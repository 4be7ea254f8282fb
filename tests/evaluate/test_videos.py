"""Paired evaluation: face measures, pairing videos with their truth (files, folders, clip
records), the JSON report and the printed table of `pcavs-jax evaluate`."""
import argparse
import json
import math
import pathlib

import numpy as np
import pytest
from skimage import data, filters

from pcavs_jax import infer
from pcavs_jax.cli import evaluate as evaluate_cli
from pcavs_jax.data import media
from pcavs_jax.evaluate import report as ev_report
from pcavs_jax.evaluate import videos as ev


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
  if sigma == 0:
    return img
  return filters.gaussian(img, sigma=sigma, channel_axis=-1, preserve_range=True).round(
      ).astype(np.uint8)


ROLL = 10 * np.sin(np.arange(8) / 2)   # degrees, counter-clockwise, of _head_moving's frames


def _head_moving(frames: int = 8) -> np.ndarray:
  """The astronaut's face turned by ROLL and moved a little per frame, 256 px."""
  import cv2
  img = data.astronaut()
  out = []
  for t in range(frames):
    m = cv2.getRotationMatrix2D((225.0, 125.0), ROLL[t], 1.0)
    m[:, 2] += (128 - 225 + 6 * np.sin(t / 3), 110 - 125 + 4 * np.cos(t / 3))
    out.append(cv2.warpAffine(img, m, (256, 256), borderMode=cv2.BORDER_REFLECT))
  return np.stack(out)


def test_face_measures_of_a_video_against_itself_and_others(tmp_path):
  from pcavs_jax.data import face
  video = _head_moving()
  analyzer = face.get_analyzer()
  same = ev.evaluate_pair(video, video, analyzer)
  assert same["lmd"] == 0.0 and same["per_frame"]["lmd"] == [0.0] * len(video)
  assert same["csim"] == pytest.approx(1.0)
  assert same["pose_err_yaw"] == same["pose_err_pitch"] == same["pose_err_roll"] == 0.0
  assert same["faces"] == {"generated": len(video), "truth": len(video)}
  # Played backwards: mouths and poses differ by frame, the identity does not.
  other = ev.evaluate_pair(video[::-1].copy(), video, analyzer)
  assert other["lmd"] > 0.5 and other["csim"] > 0.95
  assert other["pose_err_roll"] == pytest.approx(np.abs(ROLL - ROLL[::-1]).mean(), abs=1.5)
  # A pose source: the reversed video against itself has no pose error.
  posed = ev.evaluate_pair(video[::-1].copy(), video, analyzer, pose_source=video[::-1].copy())
  assert posed["pose_err_roll"] == 0.0 and posed["lmd"] == other["lmd"]
  # A reference photo: the astronaut's own descriptor; a cat has no face, named in one line.
  media.write_image(tmp_path / "ref.png", data.astronaut())
  media.write_image(tmp_path / "cat.png", data.chelsea())
  referenced = ev.evaluate_pair(video, video, analyzer,
                                reference=ev.reference_descriptor(tmp_path / "ref.png", analyzer))
  assert referenced["csim"] > 0.95
  with pytest.raises(media.InputError, match=r"cat.png: no face found$"):
    ev.reference_descriptor(tmp_path / "cat.png", analyzer)
  noise = np.random.default_rng(0).integers(90, 160, video.shape, dtype=np.uint8)
  blank = ev.evaluate_pair(noise, video, analyzer)
  assert math.isnan(blank["lmd"]) and math.isnan(blank["csim"]) and blank["faces"]["generated"] == 0
  assert any("generated: no usable face in any frame" in n for n in blank["notes"])


def test_evaluate_pair_resizes_and_cuts():
  img = media.to_rgb_uint8(data.astronaut()[20:276, 100:356])
  truth = np.stack([img] * 5)
  gen = np.stack([np.kron(_blur(img, 1.0), np.ones((2, 2, 1), np.uint8))] * 4)  # 512 px, 4 frames
  from pcavs_jax.data import face
  out = ev.evaluate_pair(gen, truth, face.get_analyzer())
  assert out["frames"] == 4 and len(out["notes"]) == 2
  assert 0.5 < out["ssim"] < 1.0 and 20 < out["psnr"] < 100
  assert out["cpbd"] < out["cpbd_truth"]
  assert out["lmd"] < 1.5 and out["csim"] > 0.95 and len(out["per_frame"]["csim"]) == 4


# -------------------------------------------------------------------------- files and reports


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> pathlib.Path:
  d = tmp_path_factory.mktemp("videos")
  img = media.to_rgb_uint8(data.astronaut()[60:316, 120:376])
  truth = np.stack([np.roll(img, i, axis=1) for i in range(6)])
  (d / "truth").mkdir()
  (d / "gen").mkdir()
  for name, shift in (("a", 0), ("b", 2)):
    media.write_video(d / "truth" / f"{name}.mp4", np.roll(truth, shift, axis=2))
    media.write_video(d / "gen" / f"{name}.mp4", _blur(np.roll(truth, shift, axis=2), 1.5))
  media.write_video(d / "gen" / "a_panel.mp4", truth)   # panels are not scored
  media.write_video(d / "gen" / "extra.mp4", truth)     # no truth: listed, not scored
  media.write_image(d / "cat.png", data.chelsea())      # a reference without a face
  return d


def test_evaluate_paths_folders(videos):
  report = ev.evaluate_paths(videos / "gen", videos / "truth")
  assert set(report["per_video"]) == {"a", "b"} and report["unmatched"] == ["extra"]
  m = report["metrics"]
  assert m["videos"] == 2 and m["frames"] == 12
  assert 0.5 < m["ssim"] < 1 and m["cpbd"] < m["cpbd_truth"]
  assert report["face_measures"] and report["detector"] == "hog"
  assert m["lmd"] < 3 and m["csim"] > 0.95 and m["pose_err_roll"] < 3
  assert len(report["per_video"]["a"]["per_frame"]["lmd"]) == 6
  assert "LSE-C/LSE-D" in report["not_supported"]
  single = ev.evaluate_paths(videos / "gen" / "a.mp4", videos / "truth" / "b.mp4")
  assert list(single["per_video"]) == ["a"]
  assert single["metrics"]["ssim"] < m["ssim"]   # a shifted truth matches worse


def test_report_json_and_table(videos, tmp_path, capsys):
  parser = argparse.ArgumentParser()
  evaluate_cli.register(parser.add_subparsers())
  args = parser.parse_args(["evaluate", "--generated", str(videos / "gen"), "--truth",
                            str(videos / "truth"), "--report", str(tmp_path / "r.json")])
  assert args.func(args) == 0
  text = capsys.readouterr().out
  for head in ("SSIM", "CPBD", "LMD px", "CSIM", "yaw err °", "pitch err °", "roll err °"):
    assert head in text
  assert "LSE-C/LSE-D: not supported" in text
  report = json.loads((tmp_path / "r.json").read_text())
  assert report["metrics"]["videos"] == 2 and report["metrics"]["lmd"] >= 0
  assert len(report["per_video"]["b"]["per_frame"]["pose_err_yaw"]) == 6
  # Without dlib the face measures are unavailable (NaN, written as null: valid JSON).
  from pcavs_jax.data import face
  haar = ev.evaluate_paths(videos / "gen" / "a.mp4", videos / "truth" / "a.mp4",
                           analyzer=face.FaceAnalyzer("haar"))
  assert math.isnan(haar["metrics"]["lmd"]) and not haar["face_measures"]
  assert "n/a" in ev_report.format_table(haar)
  args = parser.parse_args(["evaluate", "--generated", str(videos / "gen" / "a.mp4"), "--truth",
                            str(videos / "truth" / "a.mp4"), "--reference",
                            str(videos / "cat.png"), "--report", str(tmp_path / "c.json")])
  assert args.func(args) == 2
  assert capsys.readouterr().err.strip() == f"error: {videos / 'cat.png'}: no face found"
  args = parser.parse_args(["evaluate", "--generated", str(tmp_path / "none"), "--truth",
                            str(videos / "truth")])
  assert args.func(args) == 2 and "not found" in capsys.readouterr().err


# ------------------------------------------------------------------------ generation end to end


def test_records_reconstruction_and_evaluation(driver, tmp_path):
  """`generate --records` then `evaluate --truth RECORDS`: truth found by clip id."""
  from pcavs_jax.data import records
  from data_pipeline.synthtalk import generate as st_generate
  clips = list(st_generate.generate_clips(0, [0, 1], 1, 8, 64))
  records.write_clips(clips, tmp_path / "rec", "test")
  jobs = list(infer.record_jobs(tmp_path / "rec", "test", driver.resolution))
  assert [j.name for j in jobs] == [c.clip_id for c in clips]
  summary = infer.run_jobs(jobs, driver, tmp_path / "gen", progress=False)
  assert summary["counts"] == {"ok": 2}
  report = ev.evaluate_paths(tmp_path / "gen", tmp_path / "rec", split="test")
  assert set(report["per_video"]) == {c.clip_id for c in clips}
  assert report["metrics"]["frames"] == 16
