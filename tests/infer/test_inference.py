"""Generation: input preparation, the network on packed device batches, and the mp4 it writes.

A real photo (skimage's astronaut) drives a tiny random-weight checkpoint (no trained weights
exist); the checks are about the pipeline: shapes, frame counts, pose handling, batching, and a
playable h264 + AAC mp4 as long as the audio.
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import inference_testutil as util
from pcavs_jax import infer
from pcavs_jax.infer import prepare, runner
from pcavs_jax.cli import generate as generate_cli
from pcavs_jax.data import media
from pcavs_jax.infer.jobs import JobSpec, PrepareOptions
from pcavs_jax.data.media import InputError


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> dict[str, pathlib.Path]:
  d = tmp_path_factory.mktemp("inputs")
  return {
      "photo": util.write_astronaut(d / "astronaut.png"),
      "wav": util.write_wav(d / "speech.wav", seconds=1.0),
      "pose": util.write_pose_video(d / "pose.mp4", frames=10),
      # A talking video: its audio drives, its frames are the mouth source of the panel.
      "talking": util.write_pose_video(d / "talking.mp4", frames=20, audio_seconds=0.8),
  }


def _frames_dir(path: pathlib.Path) -> np.ndarray:
  return np.stack([media.read_image(p) for p in sorted(path.glob("*.png"))])


def test_loop_indices_plays_forwards_then_backwards():
  # The official calc_loop_idx: forwards, backwards, forwards..., each end frame shown twice.
  np.testing.assert_array_equal(prepare.loop_indices(3, 10), [0, 1, 2, 2, 1, 0, 0, 1, 2, 2])
  np.testing.assert_array_equal(prepare.loop_indices(5, 3), [0, 1, 2])   # longer: cut
  np.testing.assert_array_equal(prepare.loop_indices(1, 4), [0, 0, 0, 0])


def test_official_crop_takes_the_official_window():
  r = 224
  ys, xs = np.mgrid[:r, :r]
  img = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8)[None]
  out = prepare.official_crop(img)[0].astype(float)
  # Rows 0..191 and columns 16..207 stretched back to 224.
  assert out.shape == (r, r, 3)
  assert abs(out[0, 0, 0] - 16) <= 1 and abs(out[0, -1, 0] - 207) <= 1
  assert abs(out[-1, 0, 1] - 191) <= 1 and out[0, 0, 1] <= 1


def test_prepare_job_shapes_and_alignment(inputs):
  options = PrepareOptions(resolution=64, mouth=True)
  job = prepare.prepare_job(JobSpec("a", str(inputs["photo"]), str(inputs["talking"]),
                                    pose=str(inputs["pose"])), options)
  assert job.references.shape == (1, 64, 64, 3) and job.references.dtype == np.uint8
  assert job.num_frames == 20 and job.windows.shape == (20, 80, 20)
  assert len(job.wav) == 20 * 640
  assert job.pose.shape == (10, 64, 64, 3)
  np.testing.assert_array_equal(job.pose_index, prepare.loop_indices(10, 20))
  assert job.mouth.shape[0] == 20  # the talking video's own frames
  assert any("forwards and backwards" in n for n in job.notes)
  # The aligned face is centred like training crops: the eye line near the template's row.
  from pcavs_jax.data import alignment
  ref = alignment.align_image(util.astronaut(), 64)
  np.testing.assert_array_equal(job.references[0], ref)


def test_fixed_pose_image_and_reference_pose(inputs):
  options = PrepareOptions(resolution=64)
  fixed = prepare.prepare_job(JobSpec("f", str(inputs["photo"]), str(inputs["wav"]),
                                      pose=str(inputs["photo"])), options)
  assert fixed.pose.shape[0] == 1 and not fixed.pose_index.any()
  own = prepare.prepare_job(JobSpec("o", str(inputs["photo"]), str(inputs["wav"])), options)
  assert own.pose is None
  np.testing.assert_array_equal(own.pose_frame(7), own.references[0])
  np.testing.assert_array_equal(fixed.pose_frame(7), own.references[0])


def test_references_are_averaged(driver, tmp_path):
  import jax
  refs = np.stack([util.astronaut()[:256, 100:356], util.astronaut()[:256, 100:356, ::-1]])
  refs = np.stack([np.asarray(media.to_rgb_uint8(r)) for r in refs])
  small = np.stack([media.resize(r, 64, 64) for r in refs])
  id_vector, id_map = driver.encode_identity(small)
  model = driver.model
  encode = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_identity))
  out = encode(jax.device_get(driver.variables), small[None].astype(np.float32) / 127.5 - 1)
  np.testing.assert_allclose(id_vector, np.asarray(out["id_vector"][0]), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(id_map, np.asarray(out["id_map"][0]), rtol=1e-4, atol=1e-5)


def test_driver_matches_model_inference(driver):
  import jax
  rng = np.random.default_rng(0)
  ref = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
  pose = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
  mel = rng.uniform(0, 1, (4, 80, 20)).astype(np.float32)
  id_vector, id_map = driver.encode_identity(ref)
  got = np.asarray(driver.drive(np.stack([id_vector] * 4), np.stack([id_map] * 4), mel, pose))
  model = driver.model
  infer = jax.jit(lambda v, r, m, p: model.apply(v, r, m, p, method=model.infer)["driven"])
  want = infer(jax.device_get(driver.variables), np.repeat(ref, 4, 0) / 127.5 - 1, mel,
               pose / 127.5 - 1)
  want = np.clip(np.round((np.asarray(want) + 1) * 127.5), 0, 255)
  assert np.abs(got.astype(int) - want).max() <= 1


def test_random_variables_give_finite_varied_frames(driver, inputs, tmp_path):
  rec = infer.generate(driver, inputs["photo"], inputs["wav"], tmp_path / "o.mp4",
                       frames_dir=tmp_path / "frames", progress=False)
  frames = _frames_dir(tmp_path / "frames")
  assert frames.shape == (25, 64, 64, 3) and rec["frames"] == 25
  assert frames.std() > 1.0


def test_generate_driven_mp4_is_playable_with_audio(driver, inputs, tmp_path):
  out = tmp_path / "sub" / "driven.mp4"
  rec = infer.generate(driver, inputs["photo"], inputs["talking"], out, inputs["pose"],
                       panel=True, frames_dir=tmp_path / "frames", progress=False)
  assert rec["status"] == "ok" and rec["frames"] == 20
  info = media.probe(out)
  assert info.video_codec == "h264" and info.audio_codec == "aac"
  assert info.width == 64 and info.height == 64 and info.fps == 25
  audio_seconds = len(media.read_audio(inputs["talking"])) / 16000
  assert abs(info.duration - audio_seconds) < 0.1
  video = media.read_video(out)
  assert len(video) == 20
  wav = media.read_audio(out)
  assert abs(len(wav) / 16000 - 0.8) < 0.1 and np.abs(wav).max() > 0.05
  # The panel: reference | generated | pose source | mouth source.
  panel = media.probe(rec["panel"])
  assert (panel.width, panel.height) == (4 * 64, 64) and panel.audio_codec == "aac"
  frames = _frames_dir(tmp_path / "frames")
  assert frames.shape == (20, 64, 64, 3)
  # h264 at crf 18 stays close to the frames it was given.
  assert np.abs(video.astype(float) - frames).mean() < 6.0
  # Nothing temporary is left behind.
  assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_reference_pose_equals_the_reference_image_as_pose(driver, inputs, tmp_path):
  a = infer.generate(driver, inputs["photo"], inputs["wav"], tmp_path / "a.mp4",
                     frames_dir=tmp_path / "fa", progress=False)
  b = infer.generate(driver, inputs["photo"], inputs["wav"], tmp_path / "b.mp4",
                     inputs["photo"], frames_dir=tmp_path / "fb", progress=False)
  assert a["status"] == b["status"] == "ok"
  np.testing.assert_array_equal(_frames_dir(tmp_path / "fa"), _frames_dir(tmp_path / "fb"))


def test_frames_of_many_jobs_share_batches_without_changing_them(driver, inputs, tmp_path):
  options = PrepareOptions(resolution=64, max_frames=7)
  specs = [JobSpec("one", str(inputs["photo"]), str(inputs["wav"]), pose=str(inputs["pose"])),
           JobSpec("two", str(inputs["photo"]), str(inputs["talking"])),
           JobSpec("three", str(inputs["photo"]), str(inputs["wav"]), pose=str(inputs["photo"]))]
  jobs = [prepare.prepare_job(s, options) for s in specs]
  jobs[1] = prepare.prepare_job(specs[1], PrepareOptions(resolution=64, max_frames=5))
  drive = runner.jitted(driver.model, "drive")
  compiled_before = drive._cache_size()  # other tests of the session may have compiled it
  packed = infer.run_jobs(jobs, driver, tmp_path / "packed", frames_dir=tmp_path / "pf",
                          progress=False)
  assert packed["counts"] == {"ok": 3} and packed["frames"] == 7 + 5 + 7
  # One compiled batch shape for every job and the padding.
  assert drive._cache_size() - compiled_before <= 1
  compiled = drive._cache_size()
  for job in jobs:
    alone = infer.run_jobs([job], driver, tmp_path / "alone", frames_dir=tmp_path / "af",
                           progress=False)
    assert alone["counts"] == {"ok": 1}
    np.testing.assert_array_equal(_frames_dir(tmp_path / "pf" / job.name),
                                  _frames_dir(tmp_path / "af" / job.name))
  assert drive._cache_size() == compiled


def test_frames_dir_is_replaced_only_when_it_holds_our_frames(driver, inputs, tmp_path):
  d = tmp_path / "frames"
  d.mkdir()
  (d / "notes.txt").write_text("not a frame")
  with pytest.raises(InputError, match="holds other files"):
    infer.generate(driver, inputs["photo"], inputs["wav"], tmp_path / "o.mp4",
                   frames_dir=d, max_frames=5, progress=False)
  assert (d / "notes.txt").exists() and not (tmp_path / "o.mp4").exists()
  (d / "notes.txt").unlink()
  for frames in (7, 5):  # a second run replaces the first run's frames
    infer.generate(driver, inputs["photo"], inputs["wav"], tmp_path / "o.mp4",
                   frames_dir=d, max_frames=frames, progress=False)
    assert len(list(d.glob("*.png"))) == frames
    assert media.probe(tmp_path / "o.mp4").duration == pytest.approx(frames / 25, abs=0.05)


def _cli(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="pcavs-jax")
  sub = parser.add_subparsers()
  generate_cli.register(sub)
  args = parser.parse_args(argv)
  return args.func(args)


def test_cli_generate_single(checkpoint, inputs, tmp_path, capsys):
  out = tmp_path / "cli.mp4"
  rc = _cli(["generate", "--checkpoint", str(checkpoint), "--reference", str(inputs["photo"]),
             "--audio", str(inputs["wav"]), "--pose", str(inputs["pose"]), "--out", str(out),
             "--batch-size", "4", "--no-progress"])
  assert rc == 0 and media.probe(out).has_audio
  text = capsys.readouterr().out
  assert "25 frames" in text and "note: pose source has 10 frames" in text


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_astronaut_driven_by_espeak_speech(driver, inputs, tmp_path):
  """The issue's done-when: a real photo driven by real synthetic speech gives a playable mp4."""
  wav = tmp_path / "speech.wav"
  subprocess.run(["espeak-ng", "-w", str(wav), "Hello. This face speaks with my voice."],
                 check=True)
  out = tmp_path / "astronaut.mp4"
  rec = infer.generate(driver, inputs["photo"], wav, out, progress=False)
  info = media.probe(out)
  assert info.video_codec == "h264" and info.audio_codec == "aac"
  assert abs(info.duration - len(media.read_audio(wav)) / 16000) < 0.1
  assert rec["frames"] == len(media.read_video(out))


@pytest.mark.slow
def test_batches_split_across_two_devices(checkpoint, inputs, tmp_path):
  """Two simulated CPU devices (a subprocess: the device count is fixed at start-up) give the
  frames one device gives. Slow: a second process compiles the network again."""
  script = f"""
import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parents[1])!r})
import jax
from pcavs_jax import infer
assert jax.local_device_count() == 2
d = infer.load_driver({str(checkpoint)!r}, batch_size=2)
assert d.batch_size == 4 and d.num_devices == 2
infer.generate(d, {str(inputs['photo'])!r}, {str(inputs['wav'])!r}, {str(tmp_path / 'two.mp4')!r},
               {str(inputs['pose'])!r}, frames_dir={str(tmp_path / 'two')!r}, progress=False)
"""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  subprocess.run([sys.executable, "-c", script], check=True, env=env,
                 cwd=pathlib.Path(__file__).parents[2])
  one = infer.load_driver(checkpoint, batch_size=4)
  infer.generate(one, inputs["photo"], inputs["wav"], tmp_path / "one.mp4", inputs["pose"],
                 frames_dir=tmp_path / "one", progress=False)
  # Per-device batches of 2 instead of 4 may round a value the other way.
  diff = np.abs(_frames_dir(tmp_path / "one").astype(int) - _frames_dir(tmp_path / "two"))
  assert diff.max() <= 2 and diff.mean() < 0.05


def test_panel_columns_are_in_the_order_printed():
  """Each column of a panel frame holds the frame PANEL_COLUMNS names for it."""
  from types import SimpleNamespace
  from pcavs_jax.infer.writers import PANEL_COLUMNS, panel_frame
  tile = lambda v: np.full((1, 4, 4, 3), v, np.uint8)
  job = SimpleNamespace(references=tile(10), pose=tile(30), pose_index=[0],
                        mouth=tile(40), mouth_index=[0])
  frame = panel_frame(job, tile(20)[0], 0)
  values = dict(zip(PANEL_COLUMNS, frame.reshape(4, 4, 4, 3).transpose(1, 0, 2, 3)[:, 0, 0, 0]))
  assert values == {"reference": 10, "generated": 20, "pose source": 30, "mouth source": 40}
