"""Generation jobs: what a user asks for (`JobSpec`), what the network reads (`PreparedJob`), how
inputs are prepared (`PrepareOptions`), and the record of a job that failed."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator

import numpy as np

from pcavs_jax.data.media import InputError

MAX_REFERENCES = 8
PathLike = str | os.PathLike
INPUT_ROLES = ("reference", "audio", "pose", "mouth_source")


@dataclasses.dataclass
class JobSpec:
  """One generation job as a user wrote it.

  Attributes:
    name: output name, relative to the output folder, without '.mp4' (may contain '/').
    reference: reference image, folder of images, or video (first frame).
    audio: the driving audio: a sound file or a video with an audio track.
    pose: pose source: video, image, folder of frames, or None (the reference's own pose).
    mouth_source: video or frames folder shown in the panel's last column (default: the audio's
      own video, when the audio comes from a video).
    num_references: use at most this many reference images (official rows).
    num_pose_frames: use at most this many pose frames (official rows).
    num_mouth_frames: use at most this many mouth-source frames (official rows).
    mel: an .npy mel (M, 80) to use instead of computing it (official rows).
    row: the manifest row (1-based), for reports.
  """
  name: str
  reference: str
  audio: str
  pose: str | None = None
  mouth_source: str | None = None
  num_references: int | None = None
  num_pose_frames: int | None = None
  num_mouth_frames: int | None = None
  mel: str | None = None
  row: int | None = None

  @property
  def inputs(self) -> dict[str, str]:
    """The input paths given, by role, for reports."""
    return {k: str(v) for k in INPUT_ROLES if (v := getattr(self, k))}


@dataclasses.dataclass
class RowError:
  """A manifest row that names no runnable job; recorded as a failure."""
  name: str
  row: int
  problem: str
  kind: str = "invalid"


@dataclasses.dataclass
class PrepareOptions:
  """How inputs are prepared.

  Attributes:
    resolution: the model's frame size.
    aligned: inputs are already aligned face crops (SynthTalk frames, preprocessed clips): no
      detection, only a resize.
    official_crop: apply the official loader's crop after alignment (official checkpoints).
    detector: face detector, 'hog' (dlib, default) or 'cnn'; faces get dlib's 68 landmarks and
      the official alignment (`pcavs_jax.data.alignment`).
    max_references: references used from a folder.
    max_frames: cut the audio to at most this many frames.
    strict_pose_length: refuse a pose video shorter than the audio instead of looping it.
    mouth: also prepare the mouth source (the panel needs it).
  """
  resolution: int = 224
  aligned: bool = False
  official_crop: bool = False
  detector: str = "hog"
  max_references: int = MAX_REFERENCES
  max_frames: int | None = None
  strict_pose_length: bool = False
  mouth: bool = False


@dataclasses.dataclass
class PreparedJob:
  """A job's model inputs.

  Attributes:
    name: output name.
    references: (N, R, R, 3) uint8 aligned references.
    wav: (S,) float32 16 kHz mono driving audio, cut to the video's length.
    windows: (T, 80, 20) float32 mel windows, one per output frame.
    pose: (P, R, R, 3) uint8 aligned pose frames, or None for the reference's own pose.
    pose_index: (T,) frame t's pose frame.
    mouth: (M, R, R, 3) uint8 mouth-source frames for the panel, or None.
    mouth_index: (T,) frame t's mouth frame.
    notes: what was converted or adapted (downmixed audio, looped pose video, ...).
    timings: seconds spent per preparation stage.
    inputs: the input paths, for reports.
    row: the manifest row, for reports.
  """
  name: str
  references: np.ndarray
  wav: np.ndarray
  windows: np.ndarray
  pose: np.ndarray | None = None
  pose_index: np.ndarray | None = None
  mouth: np.ndarray | None = None
  mouth_index: np.ndarray | None = None
  notes: list[str] = dataclasses.field(default_factory=list)
  timings: dict[str, float] = dataclasses.field(default_factory=dict)
  inputs: dict[str, str] = dataclasses.field(default_factory=dict)
  row: int | None = None

  @property
  def num_frames(self) -> int:
    return int(self.windows.shape[0])

  def pose_frame(self, t: int) -> np.ndarray:
    return self.references[0] if self.pose is None else self.pose[self.pose_index[t]]


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
  """Adds the seconds the block takes to `timings[key]` (also when it raises)."""
  start = time.perf_counter()
  try:
    yield
  finally:
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def failure_record(name: str, error: BaseException, row: int | None = None,
                   inputs: dict | None = None) -> dict:
  """The results-file entry of a failed job."""
  if isinstance(error, InputError):
    reason, detail, where = error.kind, error.problem, error.path
  else:
    reason, detail, where = "error", f"{type(error).__name__}: {error}", ""
  rec = {"name": name, "status": "failed", "reason": reason, "input": where, "detail": detail,
         "message": str(error) if isinstance(error, InputError) else detail}
  if row is not None:
    rec["row"] = row
  if inputs:
    rec["inputs"] = inputs
  return rec
