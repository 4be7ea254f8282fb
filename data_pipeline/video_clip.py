"""One video to a `Clip`, and the worker processes that run many of them in order.

Per video: decode at 25 fps, audio to 16 kHz mono, the official face alignment
(`pcavs_jax.data.face`: dlib detection and 68 landmarks on every frame, one clip similarity plus
a smoothed per-frame mouth translation), the mel of DESIGN.md §4. The clip keeps each frame's 68
landmarks in aligned-crop pixels as `truth['landmarks']` (T, 68, 2), NaN in frames without a
usable face (real-video clips have no other truth). A bad video raises `InputError`; in a worker,
any failure becomes an `Outcome` with its reason, so one odd file never stops the run.
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from data_pipeline.video_tree import VideoTask
from pcavs_jax.data import media
from pcavs_jax.data.clips import FPS, SAMPLES_PER_FRAME, Clip
from pcavs_jax.data.media import InputError

DEFAULT_MIN_FRAMES = 10

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
  from pcavs_jax.data import alignment, face
  info = media.probe(path)
  if not info.has_video:
    raise InputError(path, "file has no video stream", "no_video")
  if not info.has_audio:
    raise InputError(path, "file has no audio track", "no_audio")
  wav = media.read_audio(path)
  n_audio = len(wav) // SAMPLES_PER_FRAME
  if n_audio < min_frames:
    raise InputError(path, f"too short: {n_audio} frames of audio (need {min_frames})",
                     "too_short")
  limit = n_audio if max_frames is None else min(n_audio, max_frames)
  frames = media.read_video(path, fps=FPS, max_side=max(1280, 4 * resolution),
                            max_frames=limit)
  t = min(len(frames), limit)
  if t < min_frames:
    raise InputError(path, f"too short: {t} video frames at 25 fps (need {min_frames})",
                     "too_short")
  frames = frames[:t]
  wav = wav[:t * SAMPLES_PER_FRAME]
  media.check_speech(wav, path, min_frames=min_frames)
  start = time.perf_counter()
  al = alignment.clip_alignment(frames, size=resolution, analyzer=face.get_analyzer(detector),
                           name=str(path))
  if notes is not None:
    notes.extend(al.notes)
  aligned = alignment.align_frames(frames, al.transforms, resolution)
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


def ordered_outcomes(tasks: list[VideoTask], workers: int, init_args: tuple
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
