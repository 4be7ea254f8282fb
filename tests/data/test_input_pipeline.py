"""The training input pipeline: shapes, content, references, augmentation, determinism, hosts."""
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import tensorflow as tf

from pcavs_jax.data import records
from pcavs_jax.data import audio
from pcavs_jax.data import augment
from pcavs_jax.data import input_pipeline
from pcavs_jax.data.clips import Clip

T = 16
SIZE = 32


def coded_clip(n: int, identity: str, label: int, num_frames: int = T) -> Clip:
  """Constant-colour frames that encode (clip n, frame t): R = 10 t + 5, G = 40 n + 20."""
  frames = np.zeros((num_frames, SIZE, SIZE, 3), np.uint8)
  frames[..., 0] = (10 * np.arange(num_frames) + 5)[:, None, None]
  frames[..., 1] = 40 * n + 20
  frames[..., 2] = 128
  hops = 4 * num_frames + 2
  return Clip(clip_id=f"c{n}", identity=identity, label=label, frames=frames,
              audio=np.zeros(num_frames * 640, np.float32),
              mel=np.tile((np.arange(hops, dtype=np.float32) / hops)[:, None], (1, 80)),
              truth={"t": np.arange(num_frames, dtype=np.float32),
                     "n": np.full((num_frames, 2), n, np.float32)},
              source=f"test:{n}")


def decode_codes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(clip n, frame t) of [-1, 1] constant-colour images (..., H, W, 3)."""
  mean = (images.mean(axis=(-3, -2)) + 1) * 127.5
  return np.rint((mean[..., 1] - 20) / 40).astype(int), np.rint((mean[..., 0] - 5) / 10).astype(int)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Clips 0-1 share identity 'a'; clips 2-5 have an identity each. Three shards."""
  root = tmp_path_factory.mktemp("records")
  ids = ["a", "a", "b", "c", "d", "e"]
  records.write_clips([coded_clip(n, ids[n], n) for n in range(6)], root, "train", num_shards=3)
  records.write_clips([coded_clip(5, "z", 0, num_frames=5)], root, "test")
  return str(root)


def small_config(**overrides):
  cfg = input_pipeline.data_config()
  cfg.resolution = SIZE
  cfg.batch_size = 4
  cfg.clip_len = 2
  cfg.num_inputs = 3
  cfg.shuffle_buffer = 8
  cfg.reference_min_gap = 4
  cfg.update(overrides)
  return cfg


def take(cfg, data_dir, n=3, **kwargs):
  kwargs.setdefault("seed", 0)
  ds = input_pipeline.create_train_dataset(cfg, data_dir, **kwargs)
  it = input_pipeline.numpy_iterator(ds)
  return [next(it) for _ in range(n)]


def test_shapes_and_content(data_dir):
  batches = take(small_config(), data_dir, n=4)
  b = batches[0]
  assert b["target"].shape == (1, 4, 2, SIZE, SIZE, 3) and b["target"].dtype == np.float32
  assert b["reference"].shape == (1, 4, 3, SIZE, SIZE, 3)
  assert b["pose_source"].shape == (1, 4, 2, SIZE, SIZE, 3)
  assert b["mel"].shape == (1, 4, 2, 80, 20) and b["label"].shape == (1, 4)
  assert b["truth"]["t"].shape == (1, 4, 2) and b["truth"]["n"].shape == (1, 4, 2, 2)
  for b in batches:
    for key in ("target", "reference", "pose_source"):
      assert -1.0 <= b[key].min() and b[key].max() <= 1.0
    n, t = decode_codes(b["target"])
    np.testing.assert_array_equal(n[..., 0], b["label"])  # label = clip number here
    np.testing.assert_array_equal(t[..., 1], t[..., 0] + 1)  # consecutive frames
    np.testing.assert_array_equal(t, b["truth"]["t"])  # truth of the target frames
    np.testing.assert_array_equal(np.repeat(n[..., None], 2, -1), b["truth"]["n"])
    clip = coded_clip(0, "a", 0)
    for idx in np.ndindex(t.shape):
      np.testing.assert_allclose(b["mel"][idx], audio.mel_windows(clip.mel, t[idx][None])[0],
                                 atol=1e-6)


def test_clip_stride(data_dir):
  cfg = small_config(clip_len=3, clip_stride=5, num_inputs=1, reference_min_gap=2,
                     augment_pose_source=False)
  for b in take(cfg, data_dir, n=3):
    n, t = decode_codes(b["target"])
    np.testing.assert_array_equal(np.diff(t, axis=-1), 5)  # targets 5 frames apart
    np.testing.assert_array_equal(t, b["truth"]["t"])
    rn, rt = decode_codes(b["reference"])
    own = rn == n[..., :1]
    # Own-clip references stay outside the targets' span (and >= reference_min_gap from it).
    far = (rt < t[..., :1] - 1) | (rt > t[..., -1:] + 1)
    assert np.all(far[own])


def test_references(data_dir):
  cfg = small_config(augment_pose_source=False)
  other = 0
  for b in take(cfg, data_dir, n=6):
    n, t = decode_codes(b["target"])
    rn, rt = decode_codes(b["reference"])
    for i in np.ndindex(b["label"].shape):
      if n[i][0] in (0, 1):
        other += int(np.all(rn[i] == 1 - n[i][0]))
        assert np.all((rn[i] == 1 - n[i][0]) | (rn[i] == n[i][0]))
      else:  # single-clip identity: own frames, >= reference_min_gap from the target
        assert np.all(rn[i] == n[i][0])
        assert np.all(np.minimum(np.abs(rt[i] - t[i][0]), np.abs(rt[i] - t[i][1])) >= 4)
  assert other > 0
  for b in take(small_config(reference_source="clip"), data_dir, n=3):
    n, _ = decode_codes(b["target"])
    rn, _ = decode_codes(b["reference"])
    np.testing.assert_array_equal(rn, np.repeat(n[..., :1], 3, axis=-1))


def test_pose_augmentation_switches(data_dir):
  off = take(small_config(augment_pose_source=False), data_dir, n=1)[0]
  np.testing.assert_array_equal(off["pose_source"], off["target"])
  on = take(small_config(), data_dir, n=1)[0]
  np.testing.assert_array_equal(on["target"], off["target"])  # augmentation touches pose only
  assert np.abs(on["pose_source"] - on["target"]).mean() > 1e-3
  no_jitter = take(small_config(pose_brightness=0.0, pose_contrast=0.0, pose_saturation=0.0,
                                pose_hue=0.0), data_dir, n=1)[0]
  # Constant frames are fixed points of the (edge-filled) warp: only colour jitter shows.
  np.testing.assert_allclose(no_jitter["pose_source"], no_jitter["target"], atol=2e-2)


def test_pose_twins(tmp_path, data_dir):
  """data.pose_twins: the pose source is the record's pose_frames at the target's frame
  indices (here coded as clip n + 3), not the target; records without them are refused."""
  twinned = []
  for n in range(3):
    clip = coded_clip(n, "a" if n < 2 else "b", n)
    clip.pose_frames = coded_clip(n + 3, "x", 0).frames
    twinned.append(clip)
  records.write_clips(twinned, tmp_path, "train")
  cfg = small_config(augment_pose_source=False, pose_twins=True)
  for b in take(cfg, str(tmp_path), n=3):
    n, t = decode_codes(b["target"])
    pn, pt = decode_codes(b["pose_source"])
    np.testing.assert_array_equal(pn, n + 3)
    np.testing.assert_array_equal(pt, t)
  with pytest.raises(ValueError, match="have no pose twins"):
    take(cfg, data_dir, n=1)


def test_perspective_and_colour_ops():
  yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 31
  images = np.stack([xx, yy, xx * yy], -1)[None].repeat(2, 0)
  shift = np.array([[3, 1], [2, 2], [1, 3], [1, 2]], np.float32)
  # Output corners sample the input at the original corners.
  m = augment.perspective_matrix(32, 32, shift)
  moved = np.array([[3, 1], [29, 2], [30, 28], [1, 29]], np.float32)
  corners = np.array([[0, 0], [31, 0], [31, 31], [0, 31]], np.float32)
  np.testing.assert_allclose(cv2.perspectiveTransform(moved[None], m)[0], corners, atol=1e-3)
  warped = augment.augment_frames(images, shift, None)
  assert warped.shape == images.shape and np.abs(warped - images).mean() > 1e-2
  np.testing.assert_array_equal(warped[0], warped[1])  # one draw for all frames of an example
  np.testing.assert_allclose(augment.augment_frames(images, np.zeros((4, 2)), None), images,
                             atol=1e-5)
  np.testing.assert_allclose(augment.augment_frames(images, None, [1, 1, 1, 0]), images,
                             atol=1e-6)
  np.testing.assert_allclose(augment.augment_frames(images, None, [0.5, 1, 1, 0]),
                             images * 0.5, atol=1e-6)
  grey = augment.augment_frames(images, None, [1, 1, 0, 0])
  np.testing.assert_allclose(grey, np.repeat(images @ augment._LUMA[:, None], 3, -1),
                             atol=1e-6)
  mean = images.mean(axis=(0, 1, 2))
  turned = augment.color_matrix(mean, 1, 1, 1, 0.2)
  assert not np.allclose(turned[:, :3], np.eye(3))
  np.testing.assert_allclose(augment._LUMA @ turned[:, :3], augment._LUMA,
                             atol=1e-3)  # a hue turn keeps the luma (YIQ's Y)


def test_pose_augmentation_eager_and_in_tf_data():
  cfg = input_pipeline.data_config()
  rng = np.random.default_rng(0)
  images = tf.constant(rng.random((2, 16, 16, 3), np.float32))
  seed = tf.constant([1, 2], tf.int64)
  eager = input_pipeline.augment_pose_source(images, seed, cfg).numpy()
  ds = tf.data.Dataset.from_tensors((images, seed)).map(
      lambda x, s: input_pipeline.augment_pose_source(x, s, cfg), num_parallel_calls=2)
  np.testing.assert_array_equal(next(iter(ds)).numpy(), eager)
  assert eager.shape == (2, 16, 16, 3) and np.abs(eager - images.numpy()).mean() > 1e-2
  assert 0 <= eager.min() and eager.max() <= 1


def test_mel_windows_match_numpy():
  mel = np.random.default_rng(0).random((37, 80)).astype(np.float32)
  frames = np.array([0, 1, 4, 8, 9])
  got = input_pipeline.mel_windows_tf(tf.constant(mel), tf.constant(frames, tf.int32))
  np.testing.assert_allclose(got, audio.mel_windows(mel, frames))


def test_determinism_and_seeds(data_dir):
  cfg = small_config()
  a, b = take(cfg, data_dir, seed=3), take(cfg, data_dir, seed=3)
  for x, y in zip(a, b):
    for key in ("target", "reference", "pose_source", "mel", "label"):
      np.testing.assert_array_equal(x[key], y[key])
  differs = lambda u, v: any(not np.array_equal(x["pose_source"], y["pose_source"])
                             for x, y in zip(u, v))
  assert differs(a, take(cfg, data_dir, seed=4))
  assert differs(a, take(cfg, data_dir, seed=3, start_step=100))


def test_resize_and_samples_per_clip(data_dir):
  b = take(small_config(resolution=16, samples_per_clip=3), data_dir, n=1)[0]
  assert b["target"].shape == (1, 4, 2, 16, 16, 3)
  n, t = decode_codes(b["target"])
  np.testing.assert_array_equal(t, b["truth"]["t"])


def test_hosts_read_disjoint_complete_records(data_dir):
  files = [str(p) for p in records.list_shards(data_dir, "train")]
  for count in (2, 3, 4):  # 3 files: file-level sharding for 2-3 hosts, record-level for 4
    seen = []
    for index in range(count):
      ds = input_pipeline.host_records(files, index, count, shuffle_seed=0).take(12)
      seen.append({records.decode_clip(r).clip_id for r in ds.as_numpy_iterator()})
    assert set().union(*seen) == {f"c{n}" for n in range(6)}
    assert sum(len(s) for s in seen) == 6
  # Through the whole pipeline: each host's labels come from its own files only.
  cfg = small_config(batch_size=8)
  labels = []
  for i in range(2):
    batches = take(cfg, data_dir, n=4, process_index=i, process_count=2)
    labels.append(set(np.concatenate([b["label"].ravel() for b in batches])))
  assert labels[0] == {0, 2, 3, 5} and labels[1] == {1, 4}


def test_batch_size_must_divide(data_dir):
  with pytest.raises(ValueError, match="divisible"):
    input_pipeline.create_train_dataset(small_config(batch_size=6), data_dir, seed=0,
                                        process_count=4)


def test_eval_clips(data_dir):
  clips = input_pipeline.create_eval_clips(data_dir, "test", resolution=16)
  assert [c.clip_id for c in clips] == ["c5"] and clips[0].frames.shape == (5, 16, 16, 3)
  assert len(input_pipeline.create_eval_clips(data_dir, "train", max_clips=2)) == 2


def test_eight_devices(data_dir):
  code = textwrap.dedent(f"""
      import os
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
      import jax
      from pcavs_jax.data import input_pipeline
      cfg = input_pipeline.data_config()
      cfg.update(resolution=16, batch_size=16, shuffle_buffer=8, reference_min_gap=2)
      ds = input_pipeline.create_train_dataset(cfg, {data_dir!r}, seed=0)
      batch = next(input_pipeline.device_iterator(ds))
      assert jax.local_device_count() == 8
      assert batch["target"].shape == (8, 2, 1, 16, 16, 3), batch["target"].shape
      assert batch["mel"].shape == (8, 2, 1, 80, 20)
      assert len(batch["target"].sharding.device_set) == 8
      print("OK")
  """)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
