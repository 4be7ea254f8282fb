"""Clips as sharded TFRecord files, and a manifest with counts.

Layout written by `write_clips(clips, out_dir, split)`:

  out_dir/manifest.json                         counts per split, merged across calls
  out_dir/<split>/clips-00000-of-000NN.tfrecord  one `tf.train.Example` per clip

Features of one example (every array stored with its shape, so any `Clip` round-trips):

  clip_id, identity, source          bytes
  label                              int64
  frames                             bytes list, one JPEG per frame
  frames/shape                       int64 [T, H, W, 3]
  pose_frames                        bytes list, one JPEG per frame (only clips that have them)
  mel, mel/shape                     float list (M * 80), [M, 80]
  audio, audio/shape                 float list (S), [S]
  truth/<name>, truth/<name>/shape   per-frame ground truth, [T, ...]
  identity_params/<name>, .../shape  per-identity ground truth

Writing is atomic per file: shards go to hidden temporary files and are renamed to their final
names only once all of them are complete, then the manifest is updated (under a file lock, by an
atomic replace). A killed run leaves at most hidden `.*.tmp` files, which no reader globs and the
next call with the same prefix removes; readers also refuse a shard set with files missing. Shard
membership is deterministic: with `num_shards` clip i goes to shard i % num_shards; without it,
shards are filled in order and closed at `max_shard_bytes`.

TensorFlow is imported lazily, so importing this module is cheap.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pcavs_jax.data.files import write_json
from pcavs_jax.data.clips import Clip

MANIFEST = "manifest.json"
FORMAT = "pcavs-clips"
FORMAT_VERSION = 1
DEFAULT_MAX_SHARD_BYTES = 128 << 20
_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


def shard_name(prefix: str, index: int, count: int) -> str:
  return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


# ----------------------------------------------------------------------------- encoding


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]),
                         [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
  if not ok:
    raise ValueError("JPEG encoding failed")
  return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
  """One stored frame as (H, W, 3) uint8 RGB."""
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if img is None:
    raise ValueError("corrupt JPEG frame")
  return img[..., ::-1]


def encode_clip(clip: Clip, jpeg_quality: int = 95) -> bytes:
  """Serialises one clip to a `tf.train.Example` (validated first)."""
  import tensorflow as tf
  clip.validate()

  def b(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

  def i(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

  def f(array):
    return tf.train.Feature(float_list=tf.train.FloatList(
        value=np.asarray(array, np.float32).reshape(-1)))

  feats: dict[str, Any] = {
      "clip_id": b([clip.clip_id.encode()]),
      "identity": b([clip.identity.encode()]),
      "source": b([clip.source.encode()]),
      "label": i([clip.label]),
      "frames": b([_encode_jpeg(fr, jpeg_quality) for fr in clip.frames]),
      "frames/shape": i(clip.frames.shape),
  }
  if clip.pose_frames is not None:
    feats["pose_frames"] = b([_encode_jpeg(fr, jpeg_quality) for fr in clip.pose_frames])
  arrays = {"mel": clip.mel, "audio": clip.audio}
  arrays.update({f"truth/{k}": v for k, v in clip.truth.items()})
  arrays.update({f"identity_params/{k}": v for k, v in clip.identity_params.items()})
  for key, value in arrays.items():
    value = np.asarray(value, np.float32)
    feats[key] = f(value)
    feats[f"{key}/shape"] = i(value.shape)
  return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def example_fields(serialized: bytes) -> dict[str, Any]:
  """One serialised example as plain values, frames left as JPEG bytes.

  Returns:
    clip_id, identity, source (str), label (int), frames and pose_frames (lists of JPEG bytes;
    pose_frames empty where the clip has none), frames_shape, mel, audio (float32 arrays), truth,
    identity_params (name -> float32 array).
  """
  import tensorflow as tf
  feats = tf.train.Example.FromString(serialized).features.feature

  def arr(key):
    shape = tuple(feats[f"{key}/shape"].int64_list.value)
    return np.asarray(feats[key].float_list.value, np.float32).reshape(shape)

  truth, params = {}, {}
  for key in feats:
    if key.endswith("/shape"):
      continue
    if key.startswith("truth/"):
      truth[key[len("truth/"):]] = arr(key)
    elif key.startswith("identity_params/"):
      params[key[len("identity_params/"):]] = arr(key)
  return {
      "clip_id": feats["clip_id"].bytes_list.value[0].decode(),
      "identity": feats["identity"].bytes_list.value[0].decode(),
      "label": int(feats["label"].int64_list.value[0]),
      "source": feats["source"].bytes_list.value[0].decode(),
      "frames": list(feats["frames"].bytes_list.value),
      "frames_shape": tuple(feats["frames/shape"].int64_list.value),
      "pose_frames": list(feats["pose_frames"].bytes_list.value) if "pose_frames" in feats else [],
      "mel": arr("mel"),
      "audio": arr("audio"),
      "truth": dict(sorted(truth.items())),
      "identity_params": dict(sorted(params.items())),
  }


def decode_clip(serialized: bytes) -> Clip:
  """Parses one serialised example back into a `Clip` of numpy arrays."""
  f = example_fields(serialized)
  frames = (np.stack([decode_jpeg(j) for j in f["frames"]]) if f["frames"]
            else np.zeros(f["frames_shape"], np.uint8))
  pose_frames = np.stack([decode_jpeg(j) for j in f["pose_frames"]]) if f["pose_frames"] else None
  return Clip(clip_id=f["clip_id"], identity=f["identity"], label=f["label"], frames=frames,
              audio=f["audio"], mel=f["mel"], truth=f["truth"],
              identity_params=f["identity_params"], source=f["source"], pose_frames=pose_frames)


# ----------------------------------------------------------------------------- manifest


@contextlib.contextmanager
def _locked(out_dir: Path):
  """Serialises manifest updates between processes writing into the same folder."""
  with open(out_dir / ".manifest.lock", "a+") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def read_manifest(out_dir: str | Path) -> dict:
  """The manifest of a record folder; an empty one where none was written yet."""
  path = Path(out_dir) / MANIFEST
  if not path.exists():
    return {"format": FORMAT, "version": FORMAT_VERSION, "splits": {}}
  return json.loads(path.read_text())


def _intersect(a: dict[str, list[int]] | None, b: dict[str, list[int]]) -> dict[str, list[int]]:
  """Keys of both spec dicts with equal shapes (`a` None: `b`)."""
  return dict(b) if a is None else {k: v for k, v in a.items() if b.get(k) == v}


def _summarise_split(files: dict[str, dict]) -> dict:
  """Split totals from per-file entries: counts summed, identities and truth merged."""
  identities: dict[str, int] = {}
  sizes = set()
  common: dict[str, dict[str, list[int]]] = {}
  for entry in files.values():
    identities.update(entry["identities"])
    sizes.update(tuple(s) for s in entry["frame_sizes"])
    if entry["clips"]:
      for key in ("truth", "identity_params"):
        common[key] = _intersect(common.get(key), entry.get(key, {}))
  return {
      "clips": sum(e["clips"] for e in files.values()),
      "frames": sum(e["frames"] for e in files.values()),
      "identities": len(identities),
      "identity_labels": dict(sorted(identities.items())),
      "frame_sizes": sorted(list(s) for s in sizes),
      "truth": dict(sorted(common.get("truth", {}).items())),
      "identity_params": dict(sorted(common.get("identity_params", {}).items())),
      "files": dict(sorted(files.items())),
  }


# ----------------------------------------------------------------------------- writing


class _Shard:
  """One shard being written to a hidden temporary file, with its counts."""

  def __init__(self, split_dir: Path, prefix: str):
    import tensorflow as tf
    fd, self.tmp_path = tempfile.mkstemp(dir=split_dir, prefix=f".{prefix}-", suffix=".tmp")
    os.close(fd)
    self.writer = tf.io.TFRecordWriter(self.tmp_path)
    self.clips = 0
    self.frames = 0
    self.bytes = 0
    self.identities: dict[str, int] = {}
    self.frame_sizes: set[tuple[int, int]] = set()
    self.truth: dict[str, list[int]] | None = None
    self.identity_params: dict[str, list[int]] | None = None

  def add(self, clip: Clip, record: bytes) -> None:
    self.writer.write(record)
    self.clips += 1
    self.frames += clip.num_frames
    self.bytes += len(record)
    self.identities[clip.identity] = int(clip.label)
    self.frame_sizes.add(tuple(int(s) for s in clip.frames.shape[1:3]))
    # Ground truth the pipeline can rely on: keys every clip has, with one (per-frame) shape.
    self.truth = _intersect(self.truth, {k: [int(s) for s in np.shape(v)[1:]]
                                         for k, v in clip.truth.items()})
    self.identity_params = _intersect(self.identity_params, {
        k: [int(s) for s in np.shape(v)] for k, v in clip.identity_params.items()})

  def close(self) -> dict:
    self.writer.close()
    return {"clips": self.clips, "frames": self.frames, "identities": self.identities,
            "frame_sizes": sorted(list(s) for s in self.frame_sizes),
            "truth": self.truth or {}, "identity_params": self.identity_params or {}}


def write_clips(clips: Iterable[Clip], out_dir: str | Path, split: str, *,
                num_shards: int | None = None, jpeg_quality: int = 95, prefix: str = "clips",
                max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> dict:
  """Writes clips as sharded TFRecords `out_dir/<split>/<prefix>-iiiii-of-nnnnn.tfrecord`.

  A call replaces the files of the same split and prefix written by an earlier call (and removes
  the temporary files a killed call left); other prefixes (e.g. one per preprocessing machine) are
  kept, and the manifest counts all of them. One writer at a time per split and prefix.

  Args:
    clips: the clips, streamed (never held in memory all at once).
    out_dir: the record folder (created if needed).
    split: split name, e.g. 'train' or 'test'.
    num_shards: fixed number of shards (clip i goes to shard i % num_shards); None fills shards
      in order up to `max_shard_bytes` each.
    jpeg_quality: JPEG quality of the frames.
    prefix: file name prefix of this call's shards.
    max_shard_bytes: shard size limit when `num_shards` is None.

  Returns:
    The split's manifest entry: clips, frames, identities (totals over all files of the split),
    identity_labels, frame_sizes, truth (per-frame tail shapes common to all clips),
    identity_params (shapes common to all clips), files (the same counts per file).
  """
  if num_shards is not None and num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  if not re.fullmatch(r"[A-Za-z0-9_.]+", split) or not re.fullmatch(r"[A-Za-z0-9_.]+", prefix):
    raise ValueError(f"split and prefix must be plain names, got {split!r}, {prefix!r}")
  out_dir = Path(out_dir)
  split_dir = out_dir / split
  split_dir.mkdir(parents=True, exist_ok=True)
  for leftover in split_dir.glob(f".{prefix}-*.tmp"):  # from a killed earlier run
    leftover.unlink(missing_ok=True)

  shards: list[_Shard] = []
  try:
    if num_shards is not None:
      shards = [_Shard(split_dir, prefix) for _ in range(num_shards)]
    for index, clip in enumerate(clips):
      record = encode_clip(clip, jpeg_quality)
      if num_shards is not None:
        shard = shards[index % num_shards]
      else:
        if not shards or (shards[-1].clips and shards[-1].bytes + len(record) > max_shard_bytes):
          shards.append(_Shard(split_dir, prefix))
        shard = shards[-1]
      shard.add(clip, record)
    if not shards:
      shards.append(_Shard(split_dir, prefix))  # an empty split still gets one (empty) file
    entries = [s.close() for s in shards]
    with _locked(out_dir):
      names = [shard_name(prefix, i, len(shards)) for i in range(len(shards))]
      for shard, name in zip(shards, names):
        os.replace(shard.tmp_path, split_dir / name)
      manifest = read_manifest(out_dir)
      old = manifest["splits"].get(split, {}).get("files", {})
      files = {k: v for k, v in old.items()
               if (m := _SHARD_RE.match(k)) is None or m["prefix"] != prefix}
      files.update(zip(names, entries))
      manifest["splits"][split] = _summarise_split(files)
      write_json(out_dir / MANIFEST, manifest, sort_keys=True)
      # Only now drop this prefix's shards of an earlier call with another shard count: until
      # the manifest names the new set, readers still find the old one complete.
      for stale in split_dir.iterdir():
        m = _SHARD_RE.match(stale.name)
        if m and m["prefix"] == prefix and stale.name not in names:
          stale.unlink()
      return manifest["splits"][split]
  finally:
    for shard in shards:
      with contextlib.suppress(Exception):
        shard.writer.close()
      if os.path.exists(shard.tmp_path):
        os.unlink(shard.tmp_path)


# ----------------------------------------------------------------------------- reading


def list_shards(records_dir: str | Path, split: str) -> list[Path]:
  """The complete shard files of a split, sorted; raises if a shard set is incomplete."""
  split_dir = Path(records_dir) / split
  manifest = read_manifest(records_dir)
  if split in manifest["splits"]:
    files = [split_dir / name for name in manifest["splits"][split]["files"]]
  else:
    files = sorted(p for p in split_dir.glob("*.tfrecord") if not p.name.startswith("."))
  groups: dict[tuple[str, int], set[int]] = {}
  for path in files:
    if not path.exists():
      raise FileNotFoundError(f"{path} is listed in the manifest but missing")
    if m := _SHARD_RE.match(path.name):
      groups.setdefault((m["prefix"], int(m["count"])), set()).add(int(m["index"]))
  for (prefix, count), indices in groups.items():
    if indices != set(range(count)):
      raise ValueError(f"{split_dir}: shard set {prefix!r} is incomplete: "
                       f"{len(indices)} of {count} files")
  return sorted(files)


def _resolve(path_or_dir: str | Path, split: str | None) -> list[Path]:
  path = Path(path_or_dir)
  if path.is_file():
    return [path]
  if split is not None:
    return list_shards(path, split)
  if (path / MANIFEST).exists():
    return [f for s in sorted(read_manifest(path)["splits"]) for f in list_shards(path, s)]
  if any(path.glob("*.tfrecord")):
    return list_shards(path.parent, path.name)
  raise FileNotFoundError(f"no clip records under {path}")


def read_records(path_or_dir: str | Path, split: str | None = None) -> Iterator[bytes]:
  """The serialised examples of a record folder, split folder or file, in file order."""
  import tensorflow as tf
  for path in _resolve(path_or_dir, split):
    yield from tf.data.TFRecordDataset(str(path)).as_numpy_iterator()


def read_clips(path_or_dir: str | Path, split: str | None = None) -> Iterator[Clip]:
  """Decodes clip records back to `Clip`s of numpy arrays, in file order.

  Args:
    path_or_dir: a record folder (with `split`, or all its splits), a split folder, or one
      .tfrecord file.
    split: the split to read from a record folder.
  """
  for raw in read_records(path_or_dir, split):
    yield decode_clip(raw)
