"""Batch jobs: recorded failures, atomic outputs, re-runs that skip finished work, hosts that
split a manifest, the official demo.csv rows run end to end (parsing: test_manifests.py)."""
import argparse
import json
import pathlib

import pytest

import inference_testutil as util
from pcavs_jax import infer
from pcavs_jax.cli import generate as generate_cli
from pcavs_jax.data import media
from pcavs_jax.infer.jobs import JobSpec


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> pathlib.Path:
  """photo.png, speech.wav (0.4 s = 10 frames), pose.mp4 (6 frames) in one folder."""
  d = tmp_path_factory.mktemp("jobs")
  util.write_astronaut(d / "photo.png")
  util.write_wav(d / "speech.wav", seconds=0.4)
  util.write_pose_video(d / "pose.mp4", frames=6)
  return d


def _read_results(path: pathlib.Path) -> list[dict]:
  return [json.loads(l) for l in path.read_text().splitlines()]


def _by_name(records: list[dict]) -> dict[str, dict]:
  return {r["name"]: r for r in records}


def test_batch_run_records_failures_and_rerun_skips(driver, data, tmp_path):
  manifest = tmp_path / "jobs.csv"
  manifest.write_text(
      f"reference,audio,pose,name\n"
      f"{data}/photo.png,{data}/speech.wav,{data}/pose.mp4,driven\n"
      f"{data}/photo.png,{data}/speech.wav,,own_pose\n"
      f"{data}/missing.png,{data}/speech.wav,,broken\n"
      f"{data}/photo.png,{data}/speech.wav,{data}/photo.png,nested/fixed\n"
      f"{data}/photo.png,{data}/speech.wav,,own_pose\n")
  out = tmp_path / "out"
  summary = infer.generate_batch(driver, manifest, out, panel=True, progress=False)
  assert summary["counts"] == {"ok": 3, "failed": 2}
  results = _read_results(out / "results.jsonl")
  by = _by_name(results)
  assert by["broken"]["reason"] == "missing" and "missing.png" in by["broken"]["message"]
  dup = [r for r in results if r["name"] == "own_pose" and r["status"] == "failed"]
  assert len(dup) == 1 and dup[0]["detail"].startswith("duplicate") and dup[0]["row"] == 6
  for name in ("driven", "own_pose", "nested/fixed"):
    info = media.probe(out / f"{name}.mp4")
    assert info.has_audio and info.video_codec == "h264"
    assert (out / f"{name}_panel.mp4").exists()
  assert by["driven"]["frames"] == 10 and "notes" in by["driven"]
  assert not [p for p in out.rglob(".*")], "temporary files left behind"

  mtime = (out / "driven.mp4").stat().st_mtime_ns
  again = infer.generate_batch(driver, manifest, out, panel=True, progress=False)
  assert again["counts"] == {"skipped": 3, "failed": 2} and again["frames"] == 0
  assert (out / "driven.mp4").stat().st_mtime_ns == mtime
  # Results accumulate over runs: the first run's lines are still there.
  assert len(_read_results(out / "results.jsonl")) == 10

  redo = infer.generate_batch(driver, manifest, out, panel=True, overwrite=True,
                              progress=False)
  assert redo["counts"] == {"ok": 3, "failed": 2}


def test_batch_records_faces_that_fail_and_finishes_the_others(driver, data, tmp_path,
                                                              monkeypatch):
  """A profile reference and a reference without a face fail with their kinds; the rest run.

  The profile is made as in test_face: the 68 landmarks dlib finds on the mirrored astronaut are
  collapsed towards one side of the jaw (the face turned away), which `face.landmark_problem`
  must refuse; the no-face reference is skimage's coffee cup."""
  import numpy as np
  from skimage import data as skdata
  from pcavs_jax.data import face
  side = np.ascontiguousarray(util.astronaut()[:, ::-1])
  media.write_image(tmp_path / "side.png", side)
  media.write_image(tmp_path / "cup.png", skdata.coffee())
  real_landmarks = face.FaceAnalyzer.landmarks

  def landmarks(self, image, box):
    lm = real_landmarks(self, image, box)
    if image.shape != side.shape or not np.array_equal(image, side):
      return lm
    turned = lm.copy()
    turned[:, 0] = lm[0, 0] + 0.15 * (lm[:, 0] - lm[0, 0])
    turned[0, 0] -= 40
    return turned

  monkeypatch.setattr(face.FaceAnalyzer, "landmarks", landmarks)
  manifest = tmp_path / "jobs.csv"
  manifest.write_text(
      "reference,audio,pose,name\n"
      f"{tmp_path}/side.png,{data}/speech.wav,,profile\n"
      f"{data}/photo.png,{data}/speech.wav,{data}/pose.mp4,driven\n"
      f"{tmp_path}/cup.png,{data}/speech.wav,,cup\n"
      f"{data}/photo.png,{data}/speech.wav,,own_pose\n")
  out = tmp_path / "out"
  summary = infer.generate_batch(driver, manifest, out, progress=False)
  assert summary["counts"] == {"ok": 2, "failed": 2}, summary["results"]
  by = _by_name(_read_results(out / "results.jsonl"))
  assert by["profile"]["status"] == "failed" and by["profile"]["reason"] == "profile_face"
  assert by["profile"]["input"].endswith("side.png") and by["profile"]["row"] == 2
  assert by["profile"]["message"].endswith(
      "side.png: profile face: the 68 landmarks cannot fit")
  assert by["cup"]["status"] == "failed" and by["cup"]["reason"] == "no_face"
  assert by["cup"]["message"].endswith("cup.png: no face found") and by["cup"]["row"] == 4
  for name in ("driven", "own_pose"):
    assert by[name]["status"] == "ok" and by[name]["frames"] == 10
    assert media.probe(out / f"{name}.mp4").has_video
  assert not (out / "profile.mp4").exists() and not (out / "cup.mp4").exists()


def test_partial_outputs_do_not_count_as_done(driver, data, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  # What a killed run leaves: a hidden temporary file, never the final name.
  (out / ".a.partial-123.mp4").write_bytes(b"half a video")
  jobs = [JobSpec("a", str(data / "photo.png"), str(data / "speech.wav"))]
  summary = infer.run_jobs(jobs, driver, out, progress=False)
  assert summary["counts"] == {"ok": 1}
  assert media.probe(out / "a.mp4").has_video
  # The panel was not asked for before; asking now makes the job unfinished again.
  summary = infer.run_jobs(jobs, driver, out, panel=True, progress=False)
  assert summary["counts"] == {"ok": 1} and (out / "a_panel.mp4").exists()


def test_hosts_split_a_manifest(driver, data, tmp_path):
  rows = "\n".join(f'{{"reference": "{data}/photo.png", "audio": "{data}/speech.wav", '
                   f'"name": "job{i}"}}' for i in range(4))
  manifest = tmp_path / "jobs.jsonl"
  manifest.write_text(rows + "\n")
  out = tmp_path / "out"
  for host in range(2):
    s = infer.generate_batch(driver, manifest, out, process_index=host, process_count=2,
                             max_frames=5, progress=False)
    assert s["counts"] == {"ok": 2}
  assert [r["name"] for r in _read_results(out / "results-000-of-002.jsonl")] == ["job0", "job2"]
  assert [r["name"] for r in _read_results(out / "results-001-of-002.jsonl")] == ["job1", "job3"]
  assert sorted(p.name for p in out.glob("*.mp4")) == [f"job{i}.mp4" for i in range(4)]
  assert all(media.probe(p).duration <= 0.25 for p in out.glob("*.mp4"))


def test_official_demo_row_runs(driver, data, tmp_path):
  """The official layout: folders of frames for reference, pose and mouth source."""
  root = tmp_path / "misc"
  for sub in ("Input/517600055", "Pose_Source/517600078", "Mouth_Source/681600002",
              "Audio_Source"):
    (root / sub).mkdir(parents=True)
  media.write_image(root / "Input/517600055/000000.jpg", util.astronaut())
  for i, frame in enumerate(media.read_video(data / "pose.mp4")):
    media.write_image(root / f"Pose_Source/517600078/{i:06d}.jpg", frame)
    media.write_image(root / f"Mouth_Source/681600002/{i:06d}.jpg", frame)
  util.write_wav(root / "Audio_Source/681600002.wav", seconds=0.4)
  (tmp_path / "demo.csv").write_text(
      "misc/Input/517600055 1 misc/Pose_Source/517600078 4 misc/Audio_Source/681600002.wav "
      "misc/Mouth_Source/681600002 6 dummy\n")
  out = tmp_path / "results"
  summary = infer.generate_batch(driver, tmp_path / "demo.csv", out, panel=True,
                                 progress=False)
  assert summary["counts"] == {"ok": 1}, summary["results"]
  name = "id_517600055_pose_517600078_audio_681600002"
  assert media.probe(out / f"{name}.mp4").has_audio
  panel = media.probe(out / f"{name}_panel.mp4")
  assert panel.width == 4 * 64
  # 4 pose frames used (the row's count) for 10 frames of audio: looped.
  assert any("4 frames" in n for n in summary["results"][0]["notes"])


def test_cli_manifest_exit_codes(checkpoint, data, tmp_path, capsys):
  manifest = tmp_path / "jobs.jsonl"
  manifest.write_text(f'{{"reference": "{data}/photo.png", "audio": "{data}/speech.wav"}}\n'
                      f'{{"reference": "{data}/photo.png", "audio": "{data}/nope.wav"}}\n')
  parser = argparse.ArgumentParser()
  generate_cli.register(parser.add_subparsers())
  args = parser.parse_args(["generate", "--checkpoint", str(checkpoint), "--manifest",
                            str(manifest), "--out", str(tmp_path / "out"), "--no-progress"])
  assert args.func(args) == 1  # a job failed, the other finished
  text = capsys.readouterr().out
  assert "1 ok" in text and "1 failed" in text and "nope.wav: audio not found" in text
  assert (tmp_path / "out" / "photo_speech.mp4").exists()
  bad = parser.parse_args(["generate", "--checkpoint", str(checkpoint), "--manifest",
                           str(tmp_path / "none.csv"), "--out", str(tmp_path / "o2")])
  assert bad.func(bad) == 2
  assert "manifest not found" in capsys.readouterr().err
