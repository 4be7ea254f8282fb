"""The batch runner: frames of many jobs packed into shared, fixed-size device batches.

Jobs are prepared in a background thread (`prefetch` ahead) while the device runs, and batch k+1
is dispatched before batch k's frames are written. The last batch is padded, so the network
compiles once. A job that fails (missing file, no face, bad audio, ...) is recorded with its
reason while the others complete; single mode (`raise_errors`) raises it instead.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterable

import numpy as np

from pcavs_jax.data.clips import FPS
from pcavs_jax.data.media import InputError
from pcavs_jax.infer.jobs import (JobSpec, PathLike, PreparedJob, PrepareOptions, RowError,
                                  failure_record, timed)
from pcavs_jax.infer.prepare import prepare_job
from pcavs_jax.infer.runner import FrameDriver
from pcavs_jax.infer.writers import JobOutput, OutputPaths, Results, output_paths

Job = JobSpec | PreparedJob


@dataclasses.dataclass
class ActiveJob:
  """A job whose identity is encoded and whose writers are open, while its frames are driven."""
  job: PreparedJob
  output: JobOutput
  id_vector: np.ndarray
  id_map: np.ndarray
  start: float
  scheduled: int = 0
  failed: bool = False

  @property
  def unscheduled(self) -> int:
    return self.job.num_frames - self.scheduled


Item = tuple[ActiveJob, int]  # one frame of a device batch: its job and its frame index


class BatchRunner:
  """Generates the videos of many jobs; `run(jobs)` once per list of jobs.

  Attributes:
    driver: the network.
    options: input preparation of the job specs.
    timings: seconds per stage of the current run.
    results: the records of the current run.
    frames_done: frames dispatched in the current run.
  """

  def __init__(self, driver: FrameDriver, out_dir: PathLike,
               options: PrepareOptions | None = None, *,
               paths: dict[str, OutputPaths] | None = None, panel: bool = False,
               frames_dir: PathLike | None = None, results_path: PathLike | None = None,
               overwrite: bool = False, progress: bool = True, raise_errors: bool = False,
               prefetch: int = 2, crf: int = 18, preset: str = "fast"):
    """Settings of the runs.

    Args:
      driver: the network.
      out_dir: output folder (`output_paths` layout) unless `paths` names a job's files.
      options: input preparation (default: the driver's resolution, everything else default).
      paths: explicit output paths by job name (single mode).
      panel: also write `<name>_panel.mp4`.
      frames_dir: also write each job's frames as PNGs to `frames_dir/<name>/`.
      results_path: JSON-lines results file to append to (None: keep in memory only).
      overwrite: redo jobs whose outputs exist (otherwise they are skipped).
      progress: show a tqdm bar of frames.
      raise_errors: re-raise a job's failure instead of recording it (single mode).
      prefetch: jobs prepared ahead.
      crf, preset: x264 quality and speed.
    """
    options = options or PrepareOptions(resolution=driver.resolution)
    self.options = dataclasses.replace(options, mouth=options.mouth or panel)
    if self.options.resolution != driver.resolution:
      raise ValueError(f"options.resolution {self.options.resolution} != model "
                       f"{driver.resolution}")
    self.driver = driver
    self.out_dir = out_dir
    self.paths = paths or {}
    self.panel = panel
    self.frames_dir = frames_dir
    self.results_path = results_path
    self.overwrite = overwrite
    self.progress = progress
    self.raise_errors = raise_errors
    self.prefetch = max(1, prefetch)
    self.crf, self.preset = crf, preset

  def run(self, jobs: Iterable[JobSpec | PreparedJob | RowError]) -> dict:
    """Runs job specs (prepared here), prepared jobs, or manifest row errors (recorded).

    Returns:
      {'results': one record per job, 'counts': by status, 'frames': frames written,
       'seconds': wall time, 'timings': seconds per stage}.
    """
    from tqdm import tqdm
    start = time.perf_counter()
    self.timings: dict[str, float] = collections.defaultdict(float)
    self.frames_done = 0
    self._queue: collections.deque = collections.deque()      # (job, paths, future or None)
    self._in_flight: collections.deque = collections.deque()  # (items, device result)
    self._current: ActiveJob | None = None
    with contextlib.ExitStack() as stack:
      self.results = Results(self.results_path)
      stack.callback(self.results.close)
      self._upcoming = iter(self._plan(jobs))
      self._bar = stack.enter_context(tqdm(total=0, unit="frame", desc="generate",
                                           disable=not self.progress, file=sys.stderr))
      self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prepare")
      stack.callback(self._pool.shutdown, wait=True, cancel_futures=True)
      try:
        self._drive_all()
      except BaseException:
        self._abort_unwritten()
        raise
    counts = collections.Counter(rec["status"] for rec in self.results.records)
    return {"results": self.results.records, "counts": dict(counts), "frames": self.frames_done,
            "seconds": time.perf_counter() - start, "timings": dict(self.timings)}

  def _fail(self, name: str, error: BaseException, row: int | None = None,
            inputs: dict | None = None) -> None:
    """Records a job's failure (raises it in single mode); the other jobs go on."""
    if self.raise_errors:
      raise error
    self.results.add(failure_record(name, error, row, inputs))

  def _plan(self, jobs: Iterable[Job | RowError]) -> list[tuple[Job, OutputPaths]]:
    """The jobs to run, with their output paths; row errors and duplicate names are recorded
    as failures, jobs whose outputs exist (unless `overwrite`) as skipped."""
    todo, seen = [], set()
    for job in jobs:
      if isinstance(job, RowError):
        self._fail(job.name, InputError(f"manifest row {job.row}", job.problem, job.kind),
                   job.row)
        continue
      if job.name in seen:
        self._fail(job.name, InputError(job.name, "duplicate output name in this run",
                                        "invalid"), job.row)
        continue
      seen.add(job.name)
      paths = self.paths.get(job.name) or output_paths(self.out_dir, job.name, self.panel,
                                                       self.frames_dir)
      if not self.overwrite and paths.done():
        self.results.add({"name": job.name, "status": "skipped", "output": str(paths.video),
                          "detail": "output exists (finished by an earlier run)"})
        continue
      todo.append((job, paths))
    return todo

  def _refill(self) -> None:
    """Starts preparing jobs until `prefetch` are queued."""
    while len(self._queue) < self.prefetch:
      nxt = next(self._upcoming, None)
      if nxt is None:
        return
      job, paths = nxt
      future = (self._pool.submit(prepare_job, job, self.options) if isinstance(job, JobSpec)
                else None)
      self._queue.append((job, paths, future))

  def _activate(self) -> ActiveJob | None:
    """The next prepared job, with its identity encoded and its writers open; None when done."""
    while True:
      self._refill()
      if not self._queue:
        return None
      spec, paths, future = self._queue.popleft()
      self._refill()
      start = time.perf_counter()
      try:
        active = self._open(future.result() if future is not None else spec, paths, start)
      except Exception as e:  # one job's failure never stops the others (unless single mode)
        self._fail(spec.name, e, spec.row, spec.inputs)
        continue
      self._bar.total += active.job.num_frames
      self._bar.refresh()
      return active

  def _open(self, job: PreparedJob, paths: OutputPaths, start: float) -> ActiveJob:
    for k, v in job.timings.items():
      self.timings[k] += v
    if job.num_frames < 1:
      raise InputError(job.inputs.get("audio", job.name), "audio is too short: no frame",
                       "too_short")
    with timed(self.timings, "identity"):
      id_vector, id_map = self.driver.encode_identity(job.references)
    with timed(self.timings, "write"):
      output = JobOutput(job, paths, self.crf, self.preset)
    return ActiveJob(job, output, id_vector, id_map, start)

  def _next_items(self) -> list[Item]:
    """Frames for one device batch: the current job's next frames, then the next jobs'."""
    items: list[Item] = []
    while len(items) < self.driver.batch_size:
      if self._current is None or self._current.unscheduled <= 0:
        self._current = self._activate()
        if self._current is None:
          break
      active = self._current
      take = min(self.driver.batch_size - len(items), active.unscheduled)
      items += [(active, active.scheduled + i) for i in range(take)]
      active.scheduled += take
    return items

  def _dispatch(self, items: list[Item]) -> None:
    """Assembles one device batch (padded to the fixed shape) and starts the network on it."""
    b, r = self.driver.batch_size, self.driver.resolution
    with timed(self.timings, "assemble"):
      padded = items + [items[-1]] * (b - len(items))  # fixed shape: one compilation
      id_vector = np.stack([a.id_vector for a, _ in padded])
      id_map = np.stack([a.id_map for a, _ in padded])
      mel = np.stack([a.job.windows[t] for a, t in padded]).astype(np.float32)
      pose = np.stack([a.job.pose_frame(t) for a, t in padded])
      assert pose.shape[1:] == (r, r, 3), pose.shape
    with timed(self.timings, "network"):
      result = self.driver.drive(id_vector, id_map, mel, pose)
    self._in_flight.append((items, result))
    self.frames_done += len(items)

  def _drive_all(self) -> None:
    """Dispatches batch k+1 before writing batch k, until every job is written."""
    while items := self._next_items():
      self._dispatch(items)
      if len(self._in_flight) > 1:
        self._write_batch(*self._in_flight.popleft())
    while self._in_flight:
      self._write_batch(*self._in_flight.popleft())

  def _write_batch(self, items: list[Item], result) -> None:
    """Writes a batch's frames to their jobs' outputs; commits the jobs it completes."""
    with timed(self.timings, "network"):
      frames = np.asarray(result)  # waits for the device
    complete = []
    with timed(self.timings, "write"):
      for k, (active, _) in enumerate(items):
        if active.failed:
          continue
        try:
          active.output.write(frames[k])
        except Exception as e:
          active.failed = True
          active.output.abort()
          self._fail(active.job.name, e, active.job.row, active.job.inputs)
          continue
        self._bar.update(1)
        if active.output.complete:
          complete.append(active)
    for active in complete:
      self._finish(active)

  def _finish(self, active: ActiveJob) -> None:
    """Renames a complete job's outputs into place and records it."""
    if active.failed:
      return
    try:
      with timed(self.timings, "write"):
        active.output.commit()
    except Exception as e:
      active.output.abort()
      self._fail(active.job.name, e, active.job.row, active.job.inputs)
      return
    self.results.add(_ok_record(active))

  def _abort_unwritten(self) -> None:
    """Removes the temporary outputs of every job left unfinished by an error or interrupt."""
    for items, _ in self._in_flight:
      for active, _ in items:
        active.output.abort()
    if self._current is not None:
      self._current.output.abort()


def _ok_record(active: ActiveJob) -> dict:
  """The results-file entry of a finished job."""
  job, p = active.job, active.output.paths
  rec = {"name": job.name, "status": "ok", "output": str(p.video), "frames": job.num_frames,
         "duration_s": round(job.num_frames / FPS, 3),
         "seconds": round(time.perf_counter() - active.start, 3), "inputs": job.inputs}
  if p.panel:
    rec["panel"] = str(p.panel)
  if p.frames:
    rec["frames_dir"] = str(p.frames)
  if job.notes:
    rec["notes"] = job.notes
  if job.row is not None:
    rec["row"] = job.row
  return rec


def run_jobs(jobs: Iterable[JobSpec | PreparedJob | RowError], driver: FrameDriver,
             out_dir: PathLike, options: PrepareOptions | None = None, **settings) -> dict:
  """Generates the videos of many jobs: `BatchRunner(driver, out_dir, options, **settings)`
  run on `jobs`; see `BatchRunner` for the settings and `BatchRunner.run` for what comes back."""
  return BatchRunner(driver, out_dir, options, **settings).run(jobs)
