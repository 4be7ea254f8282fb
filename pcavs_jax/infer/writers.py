"""Outputs of generation jobs: names and paths, the atomic per-job writer (video, panel, frames)
and the results file.

Outputs are written under a hidden temporary name, then renamed, so a killed run leaves no
half-written `<name>.mp4` and a re-run skips only finished outputs. The results file gets one JSON
line per finished job, flushed, so a killed run keeps what it did.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import time

import numpy as np

from pcavs_jax.data import files, media
from pcavs_jax.data.clips import FPS
from pcavs_jax.data.media import InputError
from pcavs_jax.infer.jobs import PathLike, PreparedJob


def check_name(name: str) -> str:
  """A job name as a relative output path without '.mp4'.

  Raises:
    InputError: empty, absolute or escaping the output folder.
  """
  n = str(name).strip().replace("\\", "/")
  if n.lower().endswith(".mp4"):
    n = n[:-4]
  parts = pathlib.PurePosixPath(n).parts
  if not n or n.startswith("/") or any(p in ("..", ".", "") for p in parts):
    raise InputError(name or "(empty)", "output name must be a relative path inside the output "
                                        "folder", "invalid")
  return n


@dataclasses.dataclass
class OutputPaths:
  """Where one job's files go."""
  video: pathlib.Path
  panel: pathlib.Path | None = None
  frames: pathlib.Path | None = None

  def done(self) -> bool:
    return all(p is None or p.exists() for p in (self.video, self.panel, self.frames))


def output_paths(out_dir: PathLike, name: str, panel: bool = False,
                 frames_dir: PathLike | None = None) -> OutputPaths:
  """Batch-mode layout: OUT/<name>.mp4, OUT/<name>_panel.mp4, FRAMES/<name>/%06d.png."""
  video = pathlib.Path(out_dir) / f"{name}.mp4"
  return OutputPaths(video, video.with_name(video.stem + "_panel.mp4") if panel else None,
                     pathlib.Path(frames_dir) / name if frames_dir else None)


def _temp_path(final: pathlib.Path) -> pathlib.Path:
  # Hidden, in the same folder (os.replace stays on one filesystem), and still '.mp4' so ffmpeg
  # picks the muxer.
  return final.with_name(f".{final.stem}.partial-{os.getpid()}{final.suffix}")


def _check_frames_target(path: pathlib.Path) -> None:
  """Refuses to replace a frames folder that holds anything but earlier frames of ours."""
  if path.is_file() or (path.is_dir() and any(
      not (f.is_file() and len(f.name) == 10 and f.name[:6].isdigit() and f.suffix == ".png")
      for f in path.iterdir())):
    raise InputError(path, "frames folder exists and holds other files: give a new or empty "
                           "folder", "invalid")


class JobOutput:
  """Streams one job's frames into its video, panel and frames folder; commits atomically.

  Every output is written under a hidden temporary name; `commit` closes them all first and only
  then renames them into place, so a job that fails (an encoder error included) leaves none of
  its outputs and keeps an earlier run's.
  """

  def __init__(self, job: PreparedJob, paths: OutputPaths, crf: int, preset: str):
    self.job = job
    self.paths = paths
    self.written = 0
    self._tmp: list[tuple[pathlib.Path, pathlib.Path]] = []
    self._writers = []
    paths.video.parent.mkdir(parents=True, exist_ok=True)
    self.video = self._writer(paths.video, crf, preset)
    self.panel = self._writer(paths.panel, crf, preset) if paths.panel else None
    self.frames_tmp = None
    if paths.frames:
      _check_frames_target(paths.frames)
      self.frames_tmp = _temp_path(paths.frames)
      shutil.rmtree(self.frames_tmp, ignore_errors=True)
      self.frames_tmp.mkdir(parents=True)
      self._tmp.append((self.frames_tmp, paths.frames))

  def _writer(self, final: pathlib.Path, crf: int, preset: str):
    tmp = _temp_path(final)
    tmp.unlink(missing_ok=True)
    self._tmp.append((tmp, final))
    w = media.VideoWriter(tmp, fps=FPS, audio=self.job.wav, crf=crf, preset=preset)
    self._writers.append(w)
    return w

  def write(self, frame: np.ndarray) -> None:
    t = self.written
    self.video.write(frame)
    if self.panel is not None:
      self.panel.write(panel_frame(self.job, frame, t))
    if self.frames_tmp is not None:
      media.write_image(self.frames_tmp / f"{t:06d}.png", frame)
    self.written += 1

  @property
  def complete(self) -> bool:
    return self.written >= self.job.num_frames

  def commit(self) -> None:
    for w in self._writers:
      w.close()
    for tmp, final in self._tmp:
      if tmp.is_dir():
        shutil.rmtree(final, ignore_errors=True)
      os.replace(tmp, final)

  def abort(self) -> None:
    for w in self._writers:
      w.abort()
    for tmp, _ in self._tmp:
      if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
      else:
        tmp.unlink(missing_ok=True)


# The panel's columns, left to right, like the official avconcat.
PANEL_COLUMNS = ("reference", "generated", "pose source", "mouth source")


def panel_frame(job: PreparedJob, generated: np.ndarray, t: int) -> np.ndarray:
  """The frames of `PANEL_COLUMNS` side by side (the pose and mouth columns when the job has them)."""
  cols = [job.references[0], generated]
  if job.pose is not None:
    cols.append(job.pose[job.pose_index[t]])
  if job.mouth is not None:
    cols.append(job.mouth[job.mouth_index[t]])
  return np.concatenate(cols, axis=1)


# ----------------------------------------------------------------------------------------------
# Running jobs


class Results:
  """The records of one run, each appended to the results file (JSON lines) as it finishes."""

  def __init__(self, path: PathLike | None):
    self.records: list[dict] = []
    self._file = None
    if path is not None:
      pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
      self._file = open(path, "a", encoding="utf-8")

  def add(self, record: dict) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    self.records.append(record)
    if self._file:
      files.append_jsonl(self._file, record)

  def close(self) -> None:
    if self._file:
      self._file.close()
