"""Real-video preprocessing: a folder of talking-face videos to aligned clip records.

`pcavs-jax preprocess --videos DIR --out DIR [--shard i/n] [--workers W] [--resolution 224]`

Which videos, their identities, splits and labels: `data_pipeline.video_tree`. One video to a
`Clip` (decode, the official face alignment, the mel): `data_pipeline.video_clip`. Clips are
written with `pcavs_jax.data.records`.

Robustness: a bad video (corrupt, no video or audio track, no face, a profile face the landmarks
cannot fit, too short, silent) is skipped and recorded with its reason in the report
`OUT/report[_sIofN].jsonl` (one JSON object per line: `status` 'ok' (with `notes` where frames
were left out or several faces seen), 'skipped' with `reason` and `detail`, or 'pending': handed
to a record file not yet committed); nothing a single file does stops the run. Clips are written
in small record files (one `write_clips` call each, with its own prefix); a clip counts as done
once its file is in the manifest, so a killed run loses at most the file it was writing, and a
re-run skips what is done (and the recorded failures, unless `retry_failed`).
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import re
import time
from collections.abc import Iterator
from typing import Any

from data_pipeline import video_clip, video_tree
from pcavs_jax.data import files
from pcavs_jax.data.clips import Clip
from pcavs_jax.data.media import InputError

DEFAULT_FRAMES_PER_FILE = 2000


def _shard_tag(shard: tuple[int, int]) -> str:
  return "all" if shard[1] == 1 else f"s{shard[0]:04d}of{shard[1]:04d}"


def report_path(out_dir: str | os.PathLike, shard: tuple[int, int] = (0, 1)) -> pathlib.Path:
  """The JSON-lines report of a shard's run."""
  tag = _shard_tag(shard)
  return pathlib.Path(out_dir) / ("report.jsonl" if tag == "all" else f"report_{tag}.jsonl")


def read_report(out_dir: str | os.PathLike) -> list[dict]:
  """All report lines of all shards in an output folder (torn last lines are ignored)."""
  return [line for path in sorted(pathlib.Path(out_dir).glob("report*.jsonl"))
          for line in files.read_jsonl(path)]


@dataclasses.dataclass
class _Resume:
  """What earlier runs did: videos done, videos that failed, report lines to complete."""
  done: set[str]
  failed: set[str]
  repaired: list[dict]       # pending lines whose record file made it into the manifest
  next_batch: int            # the first record-file number no run has used


def _resume(out_dir: pathlib.Path, tag: str) -> _Resume:
  from pcavs_jax.data import records
  manifest = records.read_manifest(out_dir)
  committed = {f"{split}/{name}" for split, entry in manifest.get("splits", {}).items()
               for name in entry.get("files", {})}
  lines = read_report(out_dir)
  done = {line["path"] for line in lines if line.get("status") == "ok"}
  failed, repaired = set(), []
  for line in lines:
    if line.get("status") == "pending" and line.get("file") in committed:
      if line["path"] not in done:
        repaired.append(dict(line, status="ok"))
        done.add(line["path"])
    elif line.get("status") == "skipped" and line.get("reason") != "crashed":
      failed.add(line["path"])  # crashes (e.g. out of memory) may be transient: retried
  # Record file numbers are never reused, not even those of files a killed run never finished
  # (its pending report lines name them).
  batch_re = re.compile(rf"^real_{tag}_(\d{{5}})-\d{{5}}-of-\d{{5}}\.tfrecord$")
  names = [p.name for p in out_dir.glob("*/*.tfrecord")]
  names += [pathlib.PurePosixPath(line["file"]).name for line in lines if line.get("file")]
  used = [int(m.group(1)) for name in names if (m := batch_re.match(name))]
  return _Resume(done, failed - done, repaired, max(used, default=-1) + 1)


class _Peekable:
  def __init__(self, it: Iterator):
    self._it = it
    self._head: list = []

  def peek(self) -> Any:
    if not self._head:
      try:
        self._head.append(next(self._it))
      except StopIteration:
        return None
    return self._head[0]

  def pop(self) -> Any:
    item = self.peek()
    self._head.clear()
    return item


class _BatchWriter:
  """Writes the outcomes, in order, into record files of whole clips of one split each, and
  every video's line into the report."""

  def __init__(self, results: Iterator, out_dir: pathlib.Path, tag: str, next_batch: int,
               report, bar, frames_per_file: int, jpeg_quality: int):
    self.results = _Peekable(results)
    self.out_dir, self.tag, self.next_batch = out_dir, tag, next_batch
    self.report, self.bar = report, bar
    self.frames_per_file, self.jpeg_quality = frames_per_file, jpeg_quality
    self.skipped: collections.Counter = collections.Counter()
    self.written = 0

  def note(self, entry: dict) -> None:
    files.append_jsonl(self.report, entry)

  def drain_failures(self) -> tuple | None:
    """Records the failures at the head; the next clip's item, left in place (None: the end)."""
    while (head := self.results.peek()) is not None and head[1].clip is None:
      task, outcome = self.results.pop()
      self.skipped[outcome.reason] += 1
      self.note({"path": task.rel, "status": "skipped", "reason": outcome.reason,
                 "detail": outcome.detail, "seconds": round(outcome.seconds, 2)})
      self._advance()
    return head

  def _advance(self) -> None:
    self.bar.update(1)
    self.bar.set_postfix(written=self.written, skipped=sum(self.skipped.values()))

  def _clips(self, split: str, file: str, batch: list[dict]) -> Iterator[Clip]:
    frames = 0
    while (frames < self.frames_per_file and (head := self.drain_failures()) is not None
           and head[0].split == split):
      task, outcome = self.results.pop()
      entry = {"path": task.rel, "clip_id": task.clip_id, "identity": task.identity,
               "label": task.label, "split": task.split, "frames": outcome.clip.num_frames,
               "file": file, "seconds": round(outcome.seconds, 2),
               "face_seconds": round(outcome.face_seconds, 2)}
      if outcome.notes:
        entry["notes"] = outcome.notes
      self.note(dict(entry, status="pending"))
      batch.append(entry)
      frames += outcome.clip.num_frames
      yield outcome.clip

  def run(self) -> None:
    from pcavs_jax.data import records
    while (first := self.drain_failures()) is not None:
      split = first[0].split
      prefix = f"real_{self.tag}_{self.next_batch:05d}"
      file = f"{split}/{records.shard_name(prefix, 0, 1)}"
      self.next_batch += 1
      batch: list[dict] = []
      records.write_clips(self._clips(split, file, batch), self.out_dir, split, num_shards=1,
                          prefix=prefix, jpeg_quality=self.jpeg_quality)
      for entry in batch:
        self.note(dict(entry, status="ok"))
        self.written += 1
        self._advance()


def preprocess_videos(videos_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      shard: tuple[int, int] = (0, 1), workers: int = 1, resolution: int = 224,
                      detector: str = "hog", min_frames: int = video_clip.DEFAULT_MIN_FRAMES,
                      max_frames: int | None = None, split: str | None = None,
                      retry_failed: bool = False,
                      frames_per_file: int = DEFAULT_FRAMES_PER_FILE, jpeg_quality: int = 95,
                      progress: bool | None = None) -> dict:
  """Preprocesses this shard's videos of a tree into clip records (see the module doc).

  Args:
    videos_dir: root of the video tree.
    out_dir: record folder (records, manifest.json, labels.json, report*.jsonl).
    shard: (i, n), this run's share of the videos.
    workers: processes (<= 1: in this process). Workers are spawned, so a script calling this
      with workers > 1 must do so under `if __name__ == '__main__':`.
    resolution: aligned frame side.
    detector: face detector, 'hog' (dlib, default) or 'cnn' (dlib's CNN: slower, finds harder
      faces); OpenCV's Haar cascade and box-based alignment only where dlib is not installed.
    min_frames, max_frames: clip length limits (25 fps frames).
    split: force all clips into this split.
    retry_failed: process videos the report lists as skipped again.
    frames_per_file: a record file is closed after this many frames (the unit of resumption).
    jpeg_quality: JPEG quality of the stored frames.
    progress: a progress bar on stderr (None: only when stderr is a terminal).

  Returns:
    a summary: videos (in this shard), done_before and failed_before (skipped as recorded by
    earlier runs), written, skipped (reason -> count, this run), report (path), detector (in
    use), landmarks ('dlib68' or 'box'), note (the face stage's, or absent), seconds.
  """
  import tqdm

  from pcavs_jax.data import face
  videos_dir, out_dir = pathlib.Path(videos_dir), pathlib.Path(out_dir)
  if not videos_dir.is_dir():
    raise InputError(videos_dir, "videos folder not found", "missing")
  out_dir.mkdir(parents=True, exist_ok=True)
  analyzer = face.get_analyzer(detector)  # fail now, not in every worker, on a bad detector
  all_tasks = video_tree.stable_labels(video_tree.find_videos(videos_dir, split), out_dir)
  tasks = [t for t in all_tasks if video_tree.in_shard(t.rel, shard)]
  report, tag = report_path(out_dir, shard), _shard_tag(shard)
  resume = _resume(out_dir, tag)
  skip = resume.done | (set() if retry_failed else resume.failed)
  todo = sorted((t for t in tasks if t.rel not in skip), key=lambda t: (t.split, t.rel))
  options = dict(resolution=resolution, detector=detector, min_frames=min_frames,
                 max_frames=max_frames)
  start = time.perf_counter()
  with open(report, "a") as rep, tqdm.tqdm(total=len(todo), unit="video", desc="preprocess",
                                          disable=None if progress is None else not progress,
                                          dynamic_ncols=True) as bar:
    for line in resume.repaired:
      files.append_jsonl(rep, line)
    writer = _BatchWriter(video_clip.ordered_outcomes(todo, workers, (options,)), out_dir, tag,
                          resume.next_batch, rep, bar, frames_per_file, jpeg_quality)
    writer.run()
  done = len(resume.done & {t.rel for t in tasks})
  summary = {"videos": len(tasks), "done_before": done,
             "failed_before": len(tasks) - len(todo) - done, "written": writer.written,
             "skipped": dict(sorted(writer.skipped.items())), "report": str(report),
             "detector": analyzer.detector,
             "landmarks": "dlib68" if analyzer.has_landmarks else "box",
             "seconds": round(time.perf_counter() - start, 1)}
  if analyzer.note:
    summary["note"] = analyzer.note
  return summary
