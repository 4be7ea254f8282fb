"""Clip records: round trip, deterministic sharding, manifest counts, atomic writes."""
import json

import numpy as np
import pytest

from pcavs_jax.data import records
from pcavs_jax.data.clips import Clip


def make_clip(i: int, *, num_frames: int = 6, size: int = 32, identity: str | None = None,
              label: int | None = None, truth: bool = True) -> Clip:
  """A small clip with smooth frames (JPEG-friendly) and exact float payloads."""
  rng = np.random.default_rng(i)
  yy, xx = np.mgrid[0:size, 0:size] / size
  frames = np.stack([np.stack([xx * 200 + t, yy * 200, (xx + yy) * 100 + 10 * i % 50], -1)
                     for t in range(num_frames)]).astype(np.uint8)
  return Clip(
      clip_id=f"clip{i:03d}",
      identity=identity or f"id{i % 3}",
      label=i % 3 if label is None else label,
      frames=frames,
      audio=rng.standard_normal(num_frames * 640).astype(np.float32),
      mel=rng.random((4 * num_frames + 3, 80)).astype(np.float32),
      truth={"yaw": rng.standard_normal(num_frames).astype(np.float32),
             "mouth": rng.standard_normal((num_frames, 2)).astype(np.float32)} if truth else {},
      identity_params={"skin": rng.random(3).astype(np.float32)} if truth else {},
      source=f"synthtalk:{i}",
  )


def shard_files(root, split="train"):
  return sorted(p.name for p in (root / split).iterdir())


def test_round_trip(tmp_path):
  clips = [make_clip(i) for i in range(5)]
  clips.append(make_clip(5, truth=False, num_frames=3))
  records.write_clips(clips, tmp_path, "train", num_shards=2)
  back = {c.clip_id: c for c in records.read_clips(tmp_path, "train")}
  assert sorted(back) == sorted(c.clip_id for c in clips)
  for c in clips:
    b = back[c.clip_id]
    assert (b.identity, b.label, b.source) == (c.identity, c.label, c.source)
    assert b.frames.shape == c.frames.shape and b.frames.dtype == np.uint8
    assert np.abs(b.frames.astype(int) - c.frames).mean() < 2.0  # JPEG at quality 95
    np.testing.assert_array_equal(b.audio, c.audio)
    np.testing.assert_array_equal(b.mel, c.mel)
    assert b.truth.keys() == c.truth.keys() and b.identity_params.keys() == c.identity_params.keys()
    for k in c.truth:
      np.testing.assert_array_equal(b.truth[k], c.truth[k])
    for k in c.identity_params:
      np.testing.assert_array_equal(b.identity_params[k], c.identity_params[k])


def test_read_paths(tmp_path):
  records.write_clips([make_clip(i) for i in range(3)], tmp_path, "train", num_shards=2)
  records.write_clips([make_clip(9)], tmp_path, "test")
  ids = lambda it: sorted(c.clip_id for c in it)
  assert ids(records.read_clips(tmp_path)) == ["clip000", "clip001", "clip002", "clip009"]
  assert ids(records.read_clips(tmp_path / "train")) == ["clip000", "clip001", "clip002"]
  one = tmp_path / "train" / records.shard_name("clips", 1, 2)
  assert ids(records.read_clips(one)) == ["clip001"]


def test_sharding_is_deterministic(tmp_path):
  clips = [make_clip(i) for i in range(7)]
  for out in (tmp_path / "a", tmp_path / "b"):
    records.write_clips(iter(clips), out, "train", num_shards=3)
  for name in shard_files(tmp_path / "a"):
    assert (tmp_path / "a/train" / name).read_bytes() == (tmp_path / "b/train" / name).read_bytes()
  for s in range(3):
    path = tmp_path / "a/train" / records.shard_name("clips", s, 3)
    assert [c.clip_id for c in records.read_clips(path)] == [f"clip{i:03d}" for i in range(s, 7, 3)]


def test_size_based_shards(tmp_path):
  info = records.write_clips((make_clip(i) for i in range(5)), tmp_path, "train",
                             max_shard_bytes=1)
  assert len(info["files"]) == 5  # one clip per shard when every clip exceeds the limit
  assert info["clips"] == 5


def test_manifest_counts_merge_across_calls(tmp_path):
  records.write_clips([make_clip(i, num_frames=4) for i in range(4)], tmp_path, "train",
                      num_shards=2)
  records.write_clips([make_clip(10, num_frames=5, identity="other", label=7)], tmp_path, "test")
  records.write_clips([make_clip(20, num_frames=3, identity="new", label=8)], tmp_path, "train",
                      prefix="part1")
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  train, test = manifest["splits"]["train"], manifest["splits"]["test"]
  assert (train["clips"], train["frames"], train["identities"]) == (5, 19, 4)
  assert (test["clips"], test["frames"], test["identities"]) == (1, 5, 1)
  assert train["identity_labels"]["new"] == 8
  assert train["truth"] == {"mouth": [2], "yaw": []}
  assert train["frame_sizes"] == [[32, 32]]

  # Re-writing a prefix replaces its files and counts (no double counting, stale shards gone).
  info = records.write_clips([make_clip(i, num_frames=4) for i in range(3)], tmp_path, "train",
                             num_shards=3)
  assert (info["clips"], info["frames"]) == (4, 15)
  assert shard_files(tmp_path) == sorted(
      [records.shard_name("clips", i, 3) for i in range(3)] + [records.shard_name("part1", 0, 1)])
  assert records.read_manifest(tmp_path)["splits"]["test"]["clips"] == 1


def test_truth_common_to_all_clips(tmp_path):
  info = records.write_clips([make_clip(0), make_clip(1, truth=False)], tmp_path, "train")
  assert info["truth"] == {}


def test_failed_write_leaves_nothing(tmp_path):
  records.write_clips([make_clip(0), make_clip(1)], tmp_path, "train", num_shards=2)
  before = (shard_files(tmp_path), (tmp_path / "manifest.json").read_text())

  def broken():
    yield make_clip(5)
    yield make_clip(6)
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    records.write_clips(broken(), tmp_path, "train", num_shards=2)
  bad = make_clip(7)
  bad.mel = bad.mel[:4]
  with pytest.raises(ValueError, match="mel"):
    records.write_clips([make_clip(8), bad], tmp_path, "train")
  assert (shard_files(tmp_path), (tmp_path / "manifest.json").read_text()) == before
  assert [c.clip_id for c in records.read_clips(tmp_path, "train")] == ["clip000", "clip001"]


def test_killed_writer_leftovers_are_invisible(tmp_path):
  # A SIGKILLed writer can leave only hidden temporary files, which readers never glob.
  records.write_clips([make_clip(0)], tmp_path, "train")
  (tmp_path / "train" / ".clips-abc.tmp").write_bytes(b"half a shard")
  (tmp_path / "manifest.json").unlink()
  assert [c.clip_id for c in records.read_clips(tmp_path / "train")] == ["clip000"]


def test_incomplete_shard_set_is_refused(tmp_path):
  records.write_clips([make_clip(i) for i in range(3)], tmp_path, "train", num_shards=3)
  (tmp_path / "train" / records.shard_name("clips", 1, 3)).unlink()
  with pytest.raises(FileNotFoundError):
    records.list_shards(tmp_path, "train")
  (tmp_path / "manifest.json").unlink()
  with pytest.raises(ValueError, match="incomplete"):
    records.list_shards(tmp_path, "train")


def test_tfds_builder(tmp_path):
  import tensorflow_datasets as tfds
  from data_pipeline.tfds_builder import PcavsClips
  clips = [make_clip(i) for i in range(3)]
  records.write_clips(clips, tmp_path / "synth_records", "train", num_shards=2)
  records.write_clips([make_clip(7)], tmp_path / "synth_records", "test")
  builder = PcavsClips(records_dir=tmp_path / "synth_records", data_dir=tmp_path / "tfds")
  assert builder.builder_config.name == "synth_records"
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.splits["test"].num_examples == 1
  got = {ex["clip_id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
  for c in clips:
    ex = got[c.clip_id]
    assert ex["frames"].shape == c.frames.shape and ex["label"] == c.label
    assert np.abs(ex["frames"].astype(int) - c.frames).mean() < 2.0
    np.testing.assert_array_equal(ex["mel"], c.mel)
    np.testing.assert_array_equal(ex["audio"], c.audio)
    np.testing.assert_array_equal(ex["truth"]["mouth"], c.truth["mouth"])
    np.testing.assert_array_equal(ex["identity_params"]["skin"], c.identity_params["skin"])
  # Real video: no ground truth features.
  records.write_clips([make_clip(8, truth=False)], tmp_path / "real", "train")
  real = PcavsClips(records_dir=tmp_path / "real", data_dir=tmp_path / "tfds")
  assert "truth" not in real.info.features and "identity_params" not in real.info.features


def test_sigkilled_writer_leaves_previous_state(tmp_path):
  import os
  import signal
  import subprocess
  import sys
  records.write_clips([make_clip(0)], tmp_path, "train")
  before = (shard_files(tmp_path), (tmp_path / "manifest.json").read_text())
  code = f"""
import sys, time
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_records import make_clip
from pcavs_jax.data import records
def clips():
  yield make_clip(1)
  yield make_clip(2)
  print("ready", flush=True)
  time.sleep(60)
  yield make_clip(3)
records.write_clips(clips(), {str(tmp_path)!r}, "train", num_shards=2)
"""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
  try:
    assert proc.stdout.readline().strip() == "ready"
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert (shard_files(tmp_path) == before[0] or
          all(n.startswith(".") for n in set(shard_files(tmp_path)) - set(before[0])))
  assert (tmp_path / "manifest.json").read_text() == before[1]
  assert [c.clip_id for c in records.read_clips(tmp_path, "train")] == ["clip000"]
  records.write_clips([make_clip(4)], tmp_path, "train")  # the next run clears the leftovers
  assert shard_files(tmp_path) == before[0]
