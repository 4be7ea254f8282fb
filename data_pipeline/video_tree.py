"""A tree of talking-face videos as preprocessing tasks: identities, splits, labels, shards.

Trees understood (paths relative to the root):
- VoxCeleb2-like `[...]/<speaker id>/<video id>/<utt>.mp4`: identity = the speaker id; split
  'test' when a folder above the speaker is named like 'test' (e.g. `vox2_test/mp4/...`), else
  'train'.
- LRW-like `[...]/<WORD>/<train|val|test>/<WORD>_00001.mp4`: LRW does not name its speakers, so
  the identity is the word (the identity-classification target is then a word class, not a
  person); split = the folder.
- anything else: identity = the parent folder, split 'train'.
Integer labels follow the sorted identity names of the whole tree and are kept in
`OUT/labels.json`, so every shard and every re-run agrees on them. A shard (i, n) takes the videos
whose path hash is i mod n: disjoint, complete, and stable when videos are added.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re

from pcavs_jax.data import files, media

LRW_SPLITS = ("train", "val", "test")
LABELS_FILE = "labels.json"


@dataclasses.dataclass(frozen=True)
class VideoTask:
  """One video to preprocess.

  Attributes:
    path: absolute path of the video.
    rel: its path relative to the tree root (POSIX), the key of the report.
    clip_id: rel without its extension.
    identity: identity name (speaker id, LRW word, or parent folder).
    split: record split.
    label: integer identity label.
  """
  path: str
  rel: str
  clip_id: str
  identity: str
  split: str
  label: int = -1


def parse_shard(text: str) -> tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n."""
  m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
  if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
    raise ValueError(f"--shard must be i/n with 0 <= i < n, got {text!r}")
  return int(m.group(1)), int(m.group(2))


def in_shard(rel: str, shard: tuple[int, int]) -> bool:
  """Whether a video (by relative path) belongs to shard (i, n): a stable hash of the path."""
  i, n = shard
  return int(hashlib.md5(rel.encode("utf-8")).hexdigest(), 16) % n == i


def describe(rel: str, split: str | None = None) -> tuple[str, str]:
  """(identity, split) of a video from its path relative to the tree root (see module doc)."""
  parts = pathlib.PurePosixPath(rel).parts
  stem = pathlib.PurePosixPath(rel).stem
  if len(parts) >= 3 and parts[-2] in LRW_SPLITS and stem.startswith(parts[-3] + "_"):
    return parts[-3], split or parts[-2]
  if len(parts) >= 3:
    above = [t for c in parts[:-3] for t in re.split(r"[_\-.]", c.lower())]
    return parts[-3], split or ("test" if "test" in above else "train")
  identity = parts[-2] if len(parts) == 2 else stem
  return identity, split or "train"


def find_videos(root: str | os.PathLike, split: str | None = None) -> list[VideoTask]:
  """All videos below `root` (sorted by relative path), with identities, splits and labels.

  Labels are the index of the identity among the sorted identity names of the whole tree.
  """
  root = pathlib.Path(root)
  rels = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for f in filenames:
      if not f.startswith(".") and media.is_video_path(f):
        rels.append(pathlib.Path(dirpath, f).relative_to(root).as_posix())
  rels.sort()
  described = [(rel, *describe(rel, split)) for rel in rels]
  labels = {name: i for i, name in enumerate(sorted({d[1] for d in described}))}
  return [VideoTask(str(root / rel), rel, str(pathlib.PurePosixPath(rel).with_suffix("")),
                    ident, sp, labels[ident]) for rel, ident, sp in described]


def stable_labels(tasks: list[VideoTask], out_dir: pathlib.Path) -> list[VideoTask]:
  """Relabels with `labels.json` of earlier runs (new identities appended), and saves it."""
  path = out_dir / LABELS_FILE
  labels: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
  new = sorted({t.identity for t in tasks} - set(labels))
  start = max(labels.values(), default=-1) + 1
  labels.update({name: start + i for i, name in enumerate(new)})
  if new or not path.exists():
    files.write_json(path, labels, sort_keys=True)
  return [dataclasses.replace(t, label=labels[t.identity]) for t in tasks]
