"""The training input pipeline: clip records (`pcavs_jax.data.records`) to device batches.

One training example, built from one clip record:

  target       (clip_len, R, R, 3) float32 in [-1, 1]: `clip_len` frames t0, t0 + clip_stride, ...
               (consecutive with the default stride 1).
  reference    (num_inputs, R, R, 3): frames of the same identity from another time (below).
  pose_source  (clip_len, R, R, 3): the target under one random perspective warp and colour jitter
               (one draw per example, the same for all its frames), so that identity cannot leak
               through E_n (DESIGN.md §3). Each augmentation switches off on its own (`pose_*`
               keys; `augment_pose_source=False` gives pose_source == target). With
               `pose_twins`, the same from the record's pose twin frames instead of the target.
  mel          (clip_len, 80, 20): the E_a window of each target frame: hops
               [4 (t - 2), 4 (t - 2) + 20), edge-padded (as `pcavs_jax.data.audio.mel_windows`).
  label        int32 identity class.
  truth        {name: (clip_len, ...)} per-frame ground truth of the target frames, for the keys
               every clip of the split has (SynthTalk); {} for real video.

References. With `reference_source='identity'` (default) clips are paired with the next clip of
the same identity in the shuffled stream (`group_by_window` keyed by the identity name), and each
takes its references from its partner: another video of the same person, as identity should not
depend on the moment. Where the stream holds no other clip of that identity (a single-clip
identity, or the end of a finite stream) the partner is the clip itself, and references come from
its own frames at least `reference_min_gap` frames from every target frame (nearer frames only when
the clip is too short). `reference_source='clip'` always uses the clip's own frames. With
samples_per_clip > 1 a clip's samples may pair with each other, which gives own-clip references.

Order: files sharded per host -> shuffled file order, repeat -> interleave -> parse -> sample a
target window and references -> shuffle -> identity pairing -> decode, resize, augment -> batch of
batch_size // process_count -> reshape to [local_devices, per_device, ...] -> prefetch.
Hosts read disjoint files (`files[process_index::process_count]`); where there are fewer files
than hosts, every host reads all files and keeps every process_count-th record. All randomness is
stateless and keyed by (seed, start_step, process_index, element index), so the same arguments give
the same batches whatever the parallelism; `start_step` (the restored step on resume) gives a
resumed run a fresh data order, as in scenic.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import cv2
import jax
import ml_collections
import numpy as np

from pcavs_jax.data import records
from pcavs_jax.data.augment import augment_frames
from pcavs_jax.data.audio import WINDOW_FRAMES
from pcavs_jax.data.clips import MEL_HOPS_PER_FRAME, Clip


class _LazyTensorFlow:
  """`tensorflow`, imported on first use: configs import `data_config` from here, and importing
  TensorFlow costs seconds."""

  def __getattr__(self, name: str) -> Any:
    import tensorflow  # pylint: disable=g-import-not-at-top
    return getattr(tensorflow, name)


tf = _LazyTensorFlow()
Batch = dict[str, Any]
AUTOTUNE = -1  # tf.data.AUTOTUNE
WINDOW_HOPS = MEL_HOPS_PER_FRAME * WINDOW_FRAMES   # 20 mel hops per E_a window


def data_config() -> ml_collections.ConfigDict:
  """Defaults of `config.data`, every key the pipeline reads.

  resolution: square output size (frames are resized from the record size; 224 official).
  clip_len: target frames per example (1 for the image model). Flattened into the batch by the
    train step, so a clip's other frames are negatives of the contrastive sync loss: negatives
    of the same face and voice, which only the mouth tells apart.
  clip_stride: frames between a clip's targets (1: consecutive; larger strides give the sync
    loss negatives whose mouths differ).
  num_inputs: reference frames per example.
  batch_size: global batch size over all devices of all hosts.
  split: record split to train on.
  shuffle_buffer: examples in the shuffle buffer (after sampling, so small JPEG strings).
  samples_per_clip: target windows drawn each time a record is read (amortises parsing).
  reference_source: 'identity' (another clip of the same identity when the stream has one) or
    'clip' (the clip's own frames); see the module docstring.
  reference_min_gap: own-clip references at least this many frames from every target frame.
  augment_pose_source: master switch of the pose-source augmentation (False: pose source = target).
  pose_twins: the pose source starts from the record's `pose_frames` (the target frames' pose and
    mouth drawn on another identity: `pcavs-jax synthtalk --pose-twins`) instead of the target
    frames, so E_n never sees the target's identity, as in cross-driving (not in the paper).
  pose_perspective: corner displacement of the perspective warp as a fraction of the half size
    (torchvision RandomPerspective's distortion_scale); 0 switches the warp off.
  pose_brightness, pose_contrast, pose_saturation: colour jitter strengths s (factors drawn from
    [1 - s, 1 + s]); pose_hue: hue shift drawn from [-h, h] (in turns); each 0 switches it off.
  device_prefetch: batches put on the devices ahead of time.
  """
  d = ml_collections.ConfigDict()
  d.resolution = 224
  d.clip_len = 1
  d.clip_stride = 1
  d.num_inputs = 1
  d.batch_size = 16
  d.split = "train"
  d.shuffle_buffer = 1024
  d.samples_per_clip = 1
  d.reference_source = "identity"
  d.reference_min_gap = 10
  d.augment_pose_source = True
  d.pose_twins = False
  d.pose_perspective = 0.2
  d.pose_brightness = 0.3
  d.pose_contrast = 0.3
  d.pose_saturation = 0.3
  d.pose_hue = 0.05
  d.device_prefetch = 2
  return d


def _data_cfg(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.data` over the defaults (accepts a full config or its `data` part)."""
  cfg = data_config()
  given = config.data if "data" in config else config
  cfg.update(given)
  return cfg


def data_seed(seed: int, start_step: int = 0, process_index: int = 0) -> tuple[int, int]:
  """The data pipeline's two-word seed for (seed, step, host)."""
  state = np.random.SeedSequence([seed, start_step, process_index]).generate_state(2)
  return int(state[0]) >> 1, int(state[1]) >> 1


# ----------------------------------------------------------------------------- reading


def host_records(files: list[str], process_index: int, process_count: int, *,
                 shuffle_seed: int | None = None, cycle_length: int = 16) -> tf.data.Dataset:
  """This host's serialised records, repeated forever.

  Files are split between hosts where there are at least as many files as hosts; otherwise every
  host reads all files in order and keeps every process_count-th record.

  Args:
    files: all shard files of the split (sorted).
    process_index: this host.
    process_count: number of hosts.
    shuffle_seed: seed of the per-epoch file order; None keeps file order.
    cycle_length: files read at once.
  """
  if not files:
    raise ValueError("no record files")
  if len(files) >= process_count:
    files = files[process_index::process_count]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_seed is not None:
      ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.repeat()
    return ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                         block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = tf.data.TFRecordDataset(files).shard(process_count, process_index)
  return ds.repeat()


def _split_files(data_dir: str, split: str) -> list[str]:
  """The shard files of `split`; raises ValueError naming data_dir and the split if none."""
  files = [str(p) for p in records.list_shards(data_dir, split)]
  if not files:
    where = "no such folder" if not os.path.isdir(data_dir) else f"no {split}/*.tfrecord shards"
    raise ValueError(f"data_dir {data_dir!r} holds no records of split {split!r} ({where})")
  return files


def _split_info(data_dir: str, split: str, files: list[str]) -> dict:
  """Frame sizes and common truth shapes, from the manifest or else from the first record."""
  manifest = records.read_manifest(data_dir)
  if split in manifest["splits"]:
    info = manifest["splits"][split]
    return {"frame_sizes": info["frame_sizes"], "truth": info["truth"]}
  clip = next(records.read_clips(files[0]))
  return {"frame_sizes": [list(clip.frames.shape[1:3])],
          "truth": {k: list(v.shape[1:]) for k, v in clip.truth.items()}}


def _parse(serialized: tf.Tensor, truth_spec: dict[str, list[int]],
           pose_twins: bool = False) -> dict[str, tf.Tensor]:
  spec = {
      "clip_id": tf.io.FixedLenFeature([], tf.string),
      "identity": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64),
      "frames": tf.io.VarLenFeature(tf.string),
      "mel": tf.io.VarLenFeature(tf.float32),
  }
  spec.update({f"truth/{k}": tf.io.VarLenFeature(tf.float32) for k in truth_spec})
  if pose_twins:
    spec["pose_frames"] = tf.io.VarLenFeature(tf.string)
  ex = tf.io.parse_single_example(serialized, spec)
  out = {
      "clip_id": ex["clip_id"],
      "identity": ex["identity"],
      "label": tf.cast(ex["label"], tf.int32),
      "frames": ex["frames"].values,
      "mel": tf.reshape(ex["mel"].values, [-1, 80]),
  }
  out["truth"] = {k: tf.reshape(ex[f"truth/{k}"].values, [-1] + list(tail))
                  for k, tail in truth_spec.items()}
  if pose_twins:
    with tf.control_dependencies([tf.debugging.assert_equal(
        tf.size(ex["pose_frames"].values), tf.size(out["frames"]),
        message="data.pose_twins: a record without pose twins")]):
      out["pose_frames"] = tf.identity(ex["pose_frames"].values)
  return out


# ----------------------------------------------------------------------------- sampling


def mel_windows_tf(mel: tf.Tensor, frames: tf.Tensor) -> tf.Tensor:
  """(len(frames), 80, 20) E_a windows, edge-padded; matches `pcavs_jax.data.audio.mel_windows`."""
  start = MEL_HOPS_PER_FRAME * (frames - 2)
  idx = start[:, None] + tf.range(WINDOW_HOPS)[None, :]
  idx = tf.clip_by_value(idx, 0, tf.shape(mel)[0] - 1)
  return tf.transpose(tf.gather(mel, idx), [0, 2, 1])


def _pick_references(num_frames: tf.Tensor, t0: tf.Tensor, span: int, num_inputs: int,
                     min_gap: int, seed: tf.Tensor) -> tf.Tensor:
  """`num_inputs` frame indices: far from the targets' span [t0, t0 + span) first, then outside
  it, then any."""
  j = tf.range(num_frames)
  dist = tf.maximum(tf.maximum(t0 - j, j - (t0 + span - 1)), 0)
  score = (tf.random.stateless_uniform([num_frames], seed)
           + tf.cast(dist >= tf.maximum(min_gap, 1), tf.float32) * 2.0
           + tf.cast(dist > 0, tf.float32))
  k = tf.minimum(num_inputs, num_frames)
  idx = tf.math.top_k(score, k=k).indices
  reps = (num_inputs + k - 1) // k  # clips shorter than num_inputs repeat their picks
  return tf.tile(idx, [reps])[:num_inputs]


def _sample(index: tf.Tensor, ex: dict[str, tf.Tensor], *, base_seed: tuple[int, int],
            cfg: ml_collections.ConfigDict) -> dict[str, tf.Tensor]:
  """Draws `samples_per_clip` target windows (+ own-clip references) from one parsed clip."""
  seed = tf.random.experimental.stateless_fold_in(tf.constant(base_seed, tf.int64), index)
  n = cfg.samples_per_clip
  seeds = tf.random.experimental.stateless_split(seed, 3 * n)
  num_frames = tf.shape(ex["frames"])[0]
  stride = cfg.get("clip_stride", 1)
  span = (cfg.clip_len - 1) * stride + 1
  out = []
  for s in range(n):
    t0 = tf.random.stateless_uniform([], seeds[3 * s], 0, num_frames - span + 1, tf.int32)
    frames = t0 + stride * tf.range(cfg.clip_len)
    refs = _pick_references(num_frames, t0, span, cfg.num_inputs, cfg.reference_min_gap,
                            seeds[3 * s + 1])
    out.append({
        "clip_id": ex["clip_id"],
        "identity": ex["identity"],
        "label": ex["label"],
        "target_jpeg": tf.gather(ex["frames"], frames),
        "reference_jpeg": tf.gather(ex["frames"], refs),
        **({"pose_jpeg": tf.gather(ex["pose_frames"], frames)} if "pose_frames" in ex else {}),
        "mel": mel_windows_tf(ex["mel"], frames),
        "truth": {k: tf.gather(v, frames) for k, v in ex["truth"].items()},
        "seed": seeds[3 * s + 2],
    })
  return tf.nest.map_structure(lambda *xs: tf.stack(xs), *out)


def _swap_references(pair: dict[str, tf.Tensor]) -> tf.data.Dataset:
  """A window of 1-2 clips of one identity: each takes its partner's references."""
  n = tf.shape(pair["label"])[0]
  partner = (tf.range(n) + 1) % n
  other = tf.gather(pair["reference_jpeg"], partner)
  same_clip = tf.equal(pair["clip_id"], tf.gather(pair["clip_id"], partner))
  pair = dict(pair)
  pair["reference_jpeg"] = tf.where(same_clip[:, None], pair["reference_jpeg"], other)
  return tf.data.Dataset.from_tensor_slices(pair)


# ----------------------------------------------------------------------------- images


def _decode(jpegs: tf.Tensor, resolution: int, ratio: int) -> tf.Tensor:
  """JPEG strings (n,) to (n, R, R, 3) float32 in [0, 1]."""
  def one(data):
    return tf.io.decode_jpeg(data, channels=3, ratio=ratio)
  images = tf.map_fn(one, jpegs, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  images = tf.image.convert_image_dtype(images, tf.float32)
  shape = tf.shape(images)
  return tf.cond(
      tf.logical_and(tf.equal(shape[1], resolution), tf.equal(shape[2], resolution)),
      lambda: images,
      lambda: tf.clip_by_value(tf.image.resize(images, [resolution, resolution], antialias=True),
                               0.0, 1.0))


def augment_pose_source(images: tf.Tensor, seed: tf.Tensor,
                        cfg: ml_collections.ConfigDict) -> tf.Tensor:
  """The pose source from target frames (n, R, R, 3) in [0, 1], per the `pose_*` switches.

  The random draws are stateless TF ops (deterministic under any parallelism); the warp and the
  colour map run in OpenCV, several times faster than TF's projective transform on a CPU.
  """
  if not cfg.augment_pose_source:
    return images
  warp = bool(cfg.pose_perspective)
  jitter = bool(cfg.pose_brightness or cfg.pose_contrast or cfg.pose_saturation or cfg.pose_hue)
  if not (warp or jitter):
    return images
  seeds = tf.random.experimental.stateless_split(seed, 2)
  half = tf.cast(tf.reverse(tf.shape(images)[1:3], [0]), tf.float32) / 2  # (w / 2, h / 2)
  shift = tf.random.stateless_uniform([4, 2], seeds[0]) * cfg.pose_perspective * half
  strengths = tf.constant([cfg.pose_brightness, cfg.pose_contrast, cfg.pose_saturation,
                           cfg.pose_hue], tf.float32)
  u = tf.random.stateless_uniform([4], seeds[1], -1.0, 1.0) * strengths
  factors = u + tf.constant([1.0, 1.0, 1.0, 0.0])

  def run(x, shift, factors):
    return augment_frames(x, shift if warp else None, factors if jitter else None)

  out = tf.numpy_function(run, [images, shift, factors], tf.float32, stateful=False)
  return tf.ensure_shape(out, images.shape)


def _finish(ex: dict[str, tf.Tensor], *, cfg: ml_collections.ConfigDict,
            ratio: int) -> dict[str, tf.Tensor]:
  r = cfg.resolution
  target = _decode(ex["target_jpeg"], r, ratio)
  reference = _decode(ex["reference_jpeg"], r, ratio)
  pose = augment_pose_source(_decode(ex["pose_jpeg"], r, ratio) if "pose_jpeg" in ex else target,
                             ex["seed"], cfg)
  to_pm1 = lambda x: x * 2.0 - 1.0
  return {
      "target": tf.ensure_shape(to_pm1(target), [cfg.clip_len, r, r, 3]),
      "reference": tf.ensure_shape(to_pm1(reference), [cfg.num_inputs, r, r, 3]),
      "pose_source": tf.ensure_shape(to_pm1(pose), [cfg.clip_len, r, r, 3]),
      "mel": tf.ensure_shape(ex["mel"], [cfg.clip_len, 80, WINDOW_HOPS]),
      "label": ex["label"],
      "truth": ex["truth"],
  }


def _jpeg_ratio(frame_sizes: list[list[int]], resolution: int) -> int:
  """The largest JPEG DCT downscale (1, 2, 4, 8) that keeps frames at least `resolution`."""
  if not frame_sizes:
    return 1
  smallest = min(min(s) for s in frame_sizes)
  ratio = 1
  while ratio < 8 and smallest // (ratio * 2) >= resolution:
    ratio *= 2
  return ratio


# ----------------------------------------------------------------------------- public API


def create_train_dataset(config: ml_collections.ConfigDict, data_dir: str, *, seed: int,
                         start_step: int = 0, process_index: int | None = None,
                         process_count: int | None = None,
                         local_device_count: int | None = None) -> tf.data.Dataset:
  """The infinite training dataset of this host, batched as [local_devices, per_device, ...].

  Args:
    config: the experiment config (reads `config.data`, see `data_config`), or its data part.
    data_dir: a record folder written by `pcavs_jax.data.records.write_clips`.
    seed: data seed; the same arguments give the same batches.
    start_step: the step training (re)starts from, folded into the data seed.
    process_index: this host (default `jax.process_index()`).
    process_count: number of hosts (default `jax.process_count()`).
    local_device_count: devices of this host (default `jax.local_device_count()`).

  Returns:
    A tf.data.Dataset of dicts: target, reference, pose_source, mel, label, truth (see module
    docstring), each with two leading axes [local_devices, batch_size // devices].
  """
  cfg = _data_cfg(config)
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  ld = jax.local_device_count() if local_device_count is None else local_device_count
  if cfg.batch_size % (pc * ld):
    raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {pc * ld} devices")
  if cfg.reference_source not in ("identity", "clip"):
    raise ValueError(f"reference_source must be 'identity' or 'clip', got {cfg.reference_source!r}")
  local_bs = cfg.batch_size // pc
  files = _split_files(data_dir, cfg.split)
  info = _split_info(data_dir, cfg.split, files)
  base_seed = data_seed(seed, start_step, pi)
  if cfg.pose_twins and next(records.read_clips(files[0])).pose_frames is None:
    raise ValueError(f"data.pose_twins: the records of {data_dir!r} have no pose twins (build "
                     f"them with `pcavs-jax synthtalk --pose-twins`)")

  ds = host_records(files, pi, pc, shuffle_seed=base_seed[0])
  ds = ds.map(functools.partial(_parse, truth_spec=info["truth"], pose_twins=cfg.pose_twins),
              num_parallel_calls=AUTOTUNE)
  ds = ds.filter(lambda ex: tf.shape(ex["frames"])[0] >= (cfg.clip_len - 1) * cfg.get("clip_stride", 1) + 1)
  ds = ds.enumerate().map(functools.partial(_sample, base_seed=base_seed, cfg=cfg),
                          num_parallel_calls=AUTOTUNE).unbatch()
  ds = ds.shuffle(cfg.shuffle_buffer, seed=base_seed[1])
  if cfg.reference_source == "identity":
    ds = ds.group_by_window(
        key_func=lambda ex: tf.strings.to_hash_bucket_fast(ex["identity"], 2**62),
        reduce_func=lambda key, window: window.batch(2), window_size=2)
    ds = ds.flat_map(_swap_references)
  ds = ds.map(functools.partial(_finish, cfg=cfg, ratio=_jpeg_ratio(info["frame_sizes"],
                                                                    cfg.resolution)),
              num_parallel_calls=AUTOTUNE)
  ds = ds.batch(local_bs, drop_remainder=True)
  per_device = local_bs // ld
  ds = ds.map(lambda b: tf.nest.map_structure(
      lambda x: tf.reshape(x, tf.concat([[ld, per_device], tf.shape(x)[1:]], 0)), b))
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(AUTOTUNE)


def numpy_iterator(ds: tf.data.Dataset) -> Iterator[Batch]:
  """Batches as numpy arrays (zero-copy views of the TF tensors)."""
  for batch in ds:
    yield jax.tree.map(lambda x: x._numpy(), batch)  # pylint: disable=protected-access


def device_iterator(ds: tf.data.Dataset, size: int = 2) -> Iterator[Batch]:
  """Batches sharded over the local devices (leading axis), `size` batches ahead."""
  from flax import jax_utils  # deferred: only the host iterator needs flax
  return jax_utils.prefetch_to_device(numpy_iterator(ds), size)


def create_train_iterator(config: ml_collections.ConfigDict, data_dir: str, *, seed: int,
                          start_step: int = 0) -> Iterator[Batch]:
  """`create_train_dataset` on this host, prefetched to its devices."""
  ds = create_train_dataset(config, data_dir, seed=seed, start_step=start_step)
  return device_iterator(ds, _data_cfg(config).device_prefetch)


def create_eval_clips(data_dir: str, split: str = "test", *, max_clips: int | None = None,
                      resolution: int | None = None) -> list[Clip]:
  """The clips of an evaluation split, in file order, frames resized to `resolution` if given."""
  out = []
  for clip in records.read_clips(data_dir, split):
    if max_clips is not None and len(out) >= max_clips:
      break
    if resolution is not None and clip.frames.shape[1:3] != (resolution, resolution):
      clip.frames = np.stack([cv2.resize(f, (resolution, resolution), interpolation=cv2.INTER_AREA)
                              for f in clip.frames])
    out.append(clip)
  return out
