"""Real-video preprocessing: a folder of talking-face videos to aligned clip records.

`pcavs-jax preprocess --videos DIR --out DIR [--shard i/n] [--workers W] [--resolution 224]`

Per video: decode at 25 fps, audio to 16 kHz mono, the official face alignment (`pcavs_jax.data.face`:
dlib detection and 68 landmarks on every frame, one clip similarity plus a smoothed per-frame
mouth translation), the mel of DESIGN.md §4, a `Clip` written with `pcavs_jax.data.records`. The
clip keeps each frame's 68 landmarks in aligned-crop pixels as `truth['landmarks']` (T, 68, 2),
NaN in frames without a usable face (real-video clips have no other truth).

Trees understood (paths relative to --videos):
- VoxCeleb2-like `[...]/<speaker id>/<video id>/<utt>.mp4`: identity = the speaker id; split
  'test' when a folder above the speaker is named like 'test' (e.g. `vox2_test/mp4/...`), else
  'train'.
- LRW-like `[...]/<WORD>/<train|val|test>/<WORD>_00001.mp4`: LRW does not name its speakers, so
  the identity is the word (the identity-classification target is then a word class, not a
  person); split = the folder.
- anything else: identity = the parent folder, split 'train'.
`--split` forces one split for everything. Integer labels follow the sorted identity names of the
whole tree and are kept in `OUT/labels.json`, so every shard and every re-run agrees on them.

Robustness: a bad video (corrupt, no video or audio track, no face, a profile face the landmarks
cannot fit, too short, silent) is skipped and recorded with its reason in the report `OUT/report[_sIofN].jsonl` (one JSON object per line:
`status` 'ok' (with `notes` where frames were left out or several faces seen), 'skipped' with
`reason` and `detail`, or 'pending': handed to a record file not yet committed); nothing a single file does stops the run. Clips are written in small record files (one
`write_clips` call each, with its own prefix); a clip counts as done once its file is in the
manifest, so a killed run loses at most the file it was writing, and a re-run skips what is done
(and the recorded failures, unless --retry-failed). `--shard i/n` takes the videos whose path hash
is i mod n (0 <= i < n): disjoint, complete, and stable when videos are added.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pathlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from pcavs_jax.data import media
from pcavs_jax.data.clips import Clip
from pcavs_jax.data.media import InputError

LRW_SPLITS = ("train", "val", "test")
LABELS_FILE = "labels.json"
DEFAULT_MIN_FRAMES = 10
DEFAULT_FRAMES_PER_FILE = 2000


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


def _stable_labels(tasks: list[VideoTask], out_dir: pathlib.Path) -> list[VideoTask]:
  """Relabels with `labels.json` of earlier runs (new identities appended), and saves it."""
  path = out_dir / LABELS_FILE
  labels: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
  new = sorted({t.identity for t in tasks} - set(labels))
  start = max(labels.values(), default=-1) + 1
  labels.update({name: start + i for i, name in enumerate(new)})
  if new or not path.exists():
    tmp = out_dir / f".{LABELS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(labels, indent=1, sort_keys=True))
    os.replace(tmp, path)
  return [dataclasses.replace(t, label=labels[t.identity]) for t in tasks]


# ----------------------------------------------------------------------------------------------
# One video
# ----------------------------------------------------------------------------------------------


LANDMARKS_KEY = "landmarks"     # truth key of the per-frame 68 landmarks (aligned-crop pixels)


def process_video(path: str | os.PathLike, clip_id: str, identity: str, label: int, *,
                  resolution: int = 224, detector: str = "hog",
                  min_frames: int = DEFAULT_MIN_FRAMES, max_frames: int | None = None,
                  source: str | None = None, notes: list[str] | None = None,
                  timings: dict[str, float] | None = None) -> Clip:
  """Decodes, aligns and analyses one video into a `Clip`.

  Args:
    path: the video (with an audio track).
    clip_id, identity, label: the clip's names (see `Clip`).
    resolution: side of the aligned frames.
    detector: face detector, 'hog' or 'cnn' (`pcavs_jax.data.face.DETECTORS`).
    min_frames: shorter clips (after cutting video and audio to the same length) are refused.
    max_frames: longer clips are cut to this many frames.
    source: the clip's `source` field (default: the path).
    notes: if given, what the face stage left out or chose is appended (one line each).
    timings: if given, the face stage's seconds are stored under 'face'.

  Raises:
    InputError: with a problem text naming why the video cannot be used.
  """
  from pcavs_jax.data import audio as audio_lib
  from pcavs_jax.data import face
  info = media.probe(path)
  if not info.has_video:
    raise InputError(path, "file has no video stream", "no_video")
  if not info.has_audio:
    raise InputError(path, "file has no audio track", "no_audio")
  wav = media.read_audio(path)
  n_audio = len(wav) // media.SAMPLES_PER_FRAME
  if n_audio < min_frames:
    raise InputError(path, f"too short: {n_audio} frames of audio (need {min_frames})",
                     "too_short")
  limit = n_audio if max_frames is None else min(n_audio, max_frames)
  frames = media.read_video(path, fps=media.FPS, max_side=max(1280, 4 * resolution),
                            max_frames=limit)
  t = min(len(frames), limit)
  if t < min_frames:
    raise InputError(path, f"too short: {t} video frames at 25 fps (need {min_frames})",
                     "too_short")
  frames = frames[:t]
  wav = wav[:t * media.SAMPLES_PER_FRAME]
  media.check_speech(wav, path, min_frames=min_frames)
  start = time.perf_counter()
  al = face.clip_alignment(frames, size=resolution, analyzer=face.get_analyzer(detector),
                           name=str(path))
  if notes is not None:
    notes.extend(al.notes)
  aligned = face.align_frames(frames, al.transforms, resolution)
  if timings is not None:
    timings["face"] = time.perf_counter() - start
  truth = ({LANDMARKS_KEY: al.aligned_landmarks().astype(np.float32)}
           if al.source == "landmarks" else {})
  clip = Clip(clip_id=clip_id, identity=identity, label=int(label), frames=aligned, audio=wav,
              mel=audio_lib.melspectrogram(wav), truth=truth,
              source=str(path) if source is None else source)
  clip.validate()
  return clip


@dataclasses.dataclass
class Outcome:
  """What became of one video: a clip, or the reason it was skipped."""
  clip: Clip | None = None
  reason: str = ""
  detail: str = ""
  seconds: float = 0.0
  notes: list[str] = dataclasses.field(default_factory=list)
  face_seconds: float = 0.0


_WORKER: dict[str, Any] = {}


def _init_worker(options: dict, in_pool: bool = True) -> None:
  from pcavs_jax.data import face
  if in_pool:
    import cv2
    cv2.setNumThreads(1)  # the pool already uses the cores
  face.get_analyzer(options.get("detector", face.DEFAULT_DETECTOR))  # load the models once
  _WORKER["options"] = options


def _ping() -> bool:
  return True


def _run_task(task: VideoTask) -> Outcome:
  start = time.perf_counter()
  notes: list[str] = []
  timings: dict[str, float] = {}
  try:
    clip = process_video(task.path, task.clip_id, task.identity, task.label, source=task.rel,
                         notes=notes, timings=timings, **_WORKER.get("options", {}))
    return Outcome(clip=clip, seconds=time.perf_counter() - start, notes=notes,
                   face_seconds=timings["face"])
  except InputError as e:
    return Outcome(reason=e.kind, detail=e.problem, seconds=time.perf_counter() - start)
  except Exception as e:  # one odd file must never stop the run
    return Outcome(reason="error", detail=f"{type(e).__name__}: {e}",
                   seconds=time.perf_counter() - start)


def _ordered_outcomes(tasks: list[VideoTask], workers: int, init_args: tuple
                      ) -> Iterator[tuple[VideoTask, Outcome]]:
  """Runs the tasks in order (in-process, or in a pool with a bounded look-ahead)."""
  if workers <= 1:
    _init_worker(*init_args, in_pool=False)
    for task in tasks:
      yield task, _run_task(task)
    return

  ctx = multiprocessing.get_context("spawn")  # the writer imports TensorFlow: never fork it

  def new_pool() -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=init_args)
    try:
      pool.submit(_ping).result()
    except BrokenProcessPool:
      pool.shutdown(wait=False, cancel_futures=True)
      raise RuntimeError(
          "preprocess: the worker processes failed to start. Scripts that call "
          "preprocess_videos(workers > 1) must do so under `if __name__ == '__main__':` "
          "(Python's spawn start method re-imports the main module).") from None
    return pool

  pool = new_pool()
  todo = collections.deque(tasks)
  window: collections.deque = collections.deque()  # (task, future, attempt)
  try:
    while todo or window:
      while todo and len(window) < 2 * workers:
        task = todo.popleft()
        window.append((task, pool.submit(_run_task, task), 1))
      task, future, attempt = window.popleft()
      try:
        outcome = future.result()
      except BrokenProcessPool:
        # A worker died (e.g. killed for memory): restart the pool and resubmit what was in
        # flight; the task at the head gets one retry before it is blamed.
        pool.shutdown(wait=False, cancel_futures=True)
        pool = new_pool()
        pending = list(window)
        window.clear()
        if attempt < 2:
          window.append((task, pool.submit(_run_task, task), attempt + 1))
        for t, _, a in pending:
          window.append((t, pool.submit(_run_task, t), a))
        if attempt < 2:
          continue
        outcome = Outcome(reason="crashed", detail="the worker process died on this video twice "
                                                   "(out of memory?)")
      yield task, outcome
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def _shard_tag(shard: tuple[int, int]) -> str:
  return "all" if shard[1] == 1 else f"s{shard[0]:04d}of{shard[1]:04d}"


def report_path(out_dir: str | os.PathLike, shard: tuple[int, int] = (0, 1)) -> pathlib.Path:
  """The JSON-lines report of a shard's run."""
  tag = _shard_tag(shard)
  return pathlib.Path(out_dir) / ("report.jsonl" if tag == "all" else f"report_{tag}.jsonl")


def read_report(out_dir: str | os.PathLike) -> list[dict]:
  """All report lines of all shards in an output folder (torn last lines are ignored)."""
  lines = []
  for path in sorted(pathlib.Path(out_dir).glob("report*.jsonl")):
    for line in path.read_text().splitlines():
      try:
        lines.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return lines


def _committed_files(out_dir: pathlib.Path) -> set[str]:
  from pcavs_jax.data import records
  manifest = records.read_manifest(out_dir)
  return {f"{split}/{name}" for split, entry in manifest.get("splits", {}).items()
          for name in entry.get("files", {})}


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


def preprocess_videos(videos_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      shard: tuple[int, int] = (0, 1), workers: int = 1, resolution: int = 224,
                      detector: str = "hog", min_frames: int = DEFAULT_MIN_FRAMES,
                      max_frames: int | None = None, split: str | None = None,
                      retry_failed: bool = False,
                      frames_per_file: int = DEFAULT_FRAMES_PER_FILE, jpeg_quality: int = 95,
                      log: Callable[[str], None] | None = print) -> dict:
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
    log: progress lines (None: quiet).

  Returns:
    a summary: videos (in this shard), done_before and failed_before (skipped as recorded by
    earlier runs), written, skipped (reason -> count, this run), report (path), detector (in
    use), landmarks ('dlib68' or 'box'), seconds.
  """
  from pcavs_jax.data import records
  from pcavs_jax.data import face
  say = log or (lambda _: None)
  videos_dir = pathlib.Path(videos_dir)
  out_dir = pathlib.Path(out_dir)
  if not videos_dir.is_dir():
    raise InputError(videos_dir, "videos folder not found", "missing")
  out_dir.mkdir(parents=True, exist_ok=True)
  analyzer = face.get_analyzer(detector)  # fail now, not in every worker, on a bad detector
  if analyzer.note:
    say(f"preprocess: note: {analyzer.note}")

  all_tasks = _stable_labels(find_videos(videos_dir, split), out_dir)
  tasks = [t for t in all_tasks if in_shard(t.rel, shard)]
  report = report_path(out_dir, shard)

  # Resume: ok lines, and pending lines whose record file made it into the manifest.
  committed = _committed_files(out_dir)
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
  failed -= done
  skip = done | (set() if retry_failed else failed)
  todo = sorted((t for t in tasks if t.rel not in skip), key=lambda t: (t.split, t.rel))
  say(f"preprocess: {len(tasks)} videos in shard {shard[0]}/{shard[1]} of {len(all_tasks)}; "
      f"{len(tasks) - len(todo)} done before, {len(todo)} to do; "
      f"faces: {analyzer.detector} detector, "
      f"{'68 landmarks' if analyzer.has_landmarks else 'box keypoints'}")

  tag = _shard_tag(shard)
  # Record file numbers are never reused, not even those of files a killed run never finished
  # (its pending report lines name them).
  batch_re = re.compile(rf"^real_{tag}_(\d{{5}})-\d{{5}}-of-\d{{5}}\.tfrecord$")
  names = [p.name for p in out_dir.glob("*/*.tfrecord")]
  names += [pathlib.PurePosixPath(line["file"]).name for line in lines if line.get("file")]
  used = [int(m.group(1)) for name in names if (m := batch_re.match(name))]
  next_batch = max(used, default=-1) + 1
  skipped: collections.Counter = collections.Counter()
  written = 0
  options = dict(resolution=resolution, detector=detector, min_frames=min_frames,
                 max_frames=max_frames)
  init_args = (options,)
  start = time.perf_counter()

  with open(report, "a", buffering=1) as rep:
    def note(entry: dict) -> None:
      rep.write(json.dumps(entry, sort_keys=True) + "\n")
      rep.flush()

    for line in repaired:
      note(line)
    results = _Peekable(_ordered_outcomes(todo, workers, init_args))

    def drain_failures() -> tuple[VideoTask, Outcome] | None:
      """Records the failures at the head; the next clip's item, left in place (None: the end)."""
      while (head := results.peek()) is not None and head[1].clip is None:
        task, outcome = results.pop()
        skipped[outcome.reason] += 1
        note({"path": task.rel, "status": "skipped", "reason": outcome.reason,
              "detail": outcome.detail, "seconds": round(outcome.seconds, 2)})
        say(f"  skipped {task.rel}: {outcome.detail}")
      return head

    while (first := drain_failures()) is not None:
      batch_split = first[0].split
      prefix = f"real_{tag}_{next_batch:05d}"
      file = f"{batch_split}/{records.shard_name(prefix, 0, 1)}"
      next_batch += 1
      batch: list[dict] = []

      def clips() -> Iterator[Clip]:
        frames = 0
        while (frames < frames_per_file and (head := drain_failures()) is not None
               and head[0].split == batch_split):
          task, outcome = results.pop()
          entry = {"path": task.rel, "clip_id": task.clip_id, "identity": task.identity,
                   "label": task.label, "split": task.split, "frames": outcome.clip.num_frames,
                   "file": file, "seconds": round(outcome.seconds, 2),
                   "face_seconds": round(outcome.face_seconds, 2)}
          if outcome.notes:
            entry["notes"] = outcome.notes
          note(dict(entry, status="pending"))
          batch.append(entry)
          frames += outcome.clip.num_frames
          yield outcome.clip

      records.write_clips(clips(), out_dir, batch_split, num_shards=1, prefix=prefix,
                          jpeg_quality=jpeg_quality)
      for entry in batch:
        note(dict(entry, status="ok"))
      written += len(batch)
      say(f"  wrote {file}: {len(batch)} clips ({written + sum(skipped.values())}/{len(todo)} "
          f"videos, {time.perf_counter() - start:.0f} s)")

  summary = {"videos": len(tasks), "done_before": len(done & {t.rel for t in tasks}),
             "failed_before": len(tasks) - len(todo) - len(done & {t.rel for t in tasks}),
             "written": written,
             "skipped": dict(sorted(skipped.items())), "report": str(report),
             "detector": analyzer.detector,
             "landmarks": "dlib68" if analyzer.has_landmarks else "box",
             "seconds": round(time.perf_counter() - start, 1)}
  say("preprocess: " + json.dumps(summary))
  return summary


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
  """Adds the `preprocess` subcommand."""
  p = subparsers.add_parser(
      "preprocess", help="real videos (VoxCeleb2/LRW-like trees) to aligned clip records",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--videos", required=True, help="root of the video tree")
  p.add_argument("--out", required=True, help="record folder (resumable)")
  p.add_argument("--shard", default="0/1", help="i/n: this machine's share, 0 <= i < n")
  p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
  p.add_argument("--resolution", type=int, default=224, help="aligned frame side")
  p.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                 help="face detector: dlib's HOG (default, fast) or its CNN (slower, finds "
                      "harder faces); landmarks are dlib's 68 points either way")
  p.add_argument("--min-frames", type=int, default=DEFAULT_MIN_FRAMES,
                 help="skip clips shorter than this (25 fps frames)")
  p.add_argument("--max-frames", type=int, default=None, help="cut longer clips")
  p.add_argument("--split", default=None, help="force every clip into this split")
  p.add_argument("--retry-failed", action="store_true",
                 help="process the videos an earlier run skipped again")
  p.add_argument("--frames-per-file", type=int, default=DEFAULT_FRAMES_PER_FILE,
                 help="frames per record file (the unit of resumption)")
  p.add_argument("--jpeg-quality", type=int, default=95)
  p.set_defaults(func=run)
  return p


def run(args: argparse.Namespace) -> int:
  """Runs `pcavs-jax preprocess`; 0 when the run completes (skipped videos included)."""
  try:
    shard = parse_shard(args.shard)
    if args.resolution < 16:
      raise ValueError(f"--resolution must be at least 16, got {args.resolution}")
    preprocess_videos(args.videos, args.out, shard=shard, workers=args.workers,
                      resolution=args.resolution, detector=args.detector,
                      min_frames=args.min_frames, max_frames=args.max_frames, split=args.split,
                      retry_failed=args.retry_failed, frames_per_file=args.frames_per_file,
                      jpeg_quality=args.jpeg_quality)
  except (InputError, ValueError) as e:
    print(f"pcavs-jax preprocess: error: {e}", file=sys.stderr)
    return 2
  return 0
