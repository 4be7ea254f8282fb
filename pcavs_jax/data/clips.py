"""The project's clip record: what SynthTalk and real-video preprocessing both produce.

A clip is one talking-face shot at 25 fps: aligned face frames, its 16 kHz mono audio, the
mel of DESIGN.md §4 (4 mel hops per video frame), an identity label and, where known, the
per-frame ground truth. `data_pipeline` writes clips as TFRecords; `pcavs_jax.data.input_pipeline`
reads them. Ground truth keys are free-form per-frame float arrays (SynthTalk writes
`yaw`, `pitch`, `roll`, `tx`, `ty`, `mouth_open`, `mouth_width`, ...).
"""
from __future__ import annotations

import dataclasses

import numpy as np

# The project's clock: every module reads these (one definition each).
FPS = 25                                  # video frames per second
SAMPLE_RATE = 16000                       # audio samples per second
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS    # 640 audio samples per video frame
MEL_HOPS_PER_FRAME = 4                    # 160-sample mel hops per video frame (DESIGN.md §4)


@dataclasses.dataclass
class Clip:
  """One clip, in memory.

  Attributes:
    clip_id: unique name, e.g. 'id00012/abc/00001' (also the record's key).
    identity: identity name (speaker), e.g. 'id00012' or 'synth_0007'.
    label: integer identity class for the identity-classification loss.
    frames: (T, H, W, 3) uint8 aligned RGB face frames.
    audio: (S,) float32 mono waveform at 16 kHz, S ~= T * 640.
    mel: (M, 80) float32 in [0, 1], M >= 4 * T (DESIGN.md §4).
    truth: per-frame ground truth, name -> (T,) or (T, k) float32; empty for real video.
    identity_params: per-identity ground truth (SynthTalk), name -> float32 array.
    source: where the clip came from (video path, or 'synthtalk:<seed>').
    pose_frames: None, or (T, H, W, 3) uint8: the same per-frame pose and mouth drawn on another
      identity (SynthTalk's pose twins, not in the paper), a pose source that shows no trace of
      the clip's own identity.
  """
  clip_id: str
  identity: str
  label: int
  frames: np.ndarray
  audio: np.ndarray
  mel: np.ndarray
  truth: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  identity_params: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  source: str = ""
  pose_frames: np.ndarray | None = None

  @property
  def num_frames(self) -> int:
    return int(self.frames.shape[0])

  def validate(self) -> None:
    """Raises ValueError naming the first field that breaks the format."""
    f = self.frames
    if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
      raise ValueError(f"clip {self.clip_id}: frames must be (T, H, W, 3) uint8, got {f.shape} {f.dtype}")
    if self.audio.ndim != 1:
      raise ValueError(f"clip {self.clip_id}: audio must be 1-D mono, got shape {self.audio.shape}")
    if self.mel.ndim != 2 or self.mel.shape[1] != 80:
      raise ValueError(f"clip {self.clip_id}: mel must be (M, 80), got {self.mel.shape}")
    if self.mel.shape[0] < MEL_HOPS_PER_FRAME * self.num_frames:
      raise ValueError(f"clip {self.clip_id}: mel has {self.mel.shape[0]} hops, "
                       f"needs >= {MEL_HOPS_PER_FRAME * self.num_frames} for {self.num_frames} frames")
    if self.pose_frames is not None and (self.pose_frames.shape != f.shape
                                         or self.pose_frames.dtype != np.uint8):
      raise ValueError(f"clip {self.clip_id}: pose_frames must be {f.shape} uint8 like frames, "
                       f"got {self.pose_frames.shape} {self.pose_frames.dtype}")
    for name, value in self.truth.items():
      if value.shape[0] != self.num_frames:
        raise ValueError(f"clip {self.clip_id}: truth {name!r} has {value.shape[0]} rows, "
                         f"expected {self.num_frames}")
