"""Jobs from data sets, already aligned (no detection): the SynthTalk cross-driven triples and the
self-driven reconstruction of clip records (the paper's reconstruction evaluation)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pcavs_jax.data import media
from pcavs_jax.data.clips import SAMPLES_PER_FRAME
from pcavs_jax.infer.jobs import PathLike, PreparedJob
from pcavs_jax.infer.writers import check_name


def eval_set_jobs(eval_set, resolution: int | None = None) -> Iterator[PreparedJob]:
  """One job per SynthTalk cross-driven triple: A's first frame, B's poses, C's audio.

  Frames are already aligned (resized to `resolution` when it differs); the panel's last column
  shows the exact truth. Named by triple id.
  """
  from pcavs_jax.data import audio as audio_lib
  r = resolution or eval_set.resolution
  for tr in eval_set.triples:
    t = tr.num_frames
    yield PreparedJob(
        name=tr.triple_id, references=media.resize(tr.reference_frames[:1], r, r),
        wav=np.asarray(tr.audio, np.float32)[:t * SAMPLES_PER_FRAME],
        windows=audio_lib.mel_windows(tr.mel, t), pose=media.resize(tr.pose_frames[:t], r, r),
        pose_index=np.arange(t), mouth=media.resize(tr.truth_frames, r, r),
        mouth_index=np.arange(t),
        inputs={"reference": tr.reference_clip, "pose": tr.pose_clip, "audio": tr.audio_clip})


def record_jobs(records_dir: PathLike, split: str = "test", resolution: int | None = None,
                max_clips: int | None = None) -> Iterator[PreparedJob]:
  """Self-driven reconstruction of clip records (the paper's reconstruction evaluation).

  Identity from the clip's first frame, pose from its own frames, mouth from its own audio;
  named by clip id, so `pcavs-jax evaluate --truth RECORDS` finds the ground truth.
  """
  from pcavs_jax.data import records
  from pcavs_jax.data import audio as audio_lib
  for k, clip in enumerate(records.read_clips(records_dir, split)):
    if max_clips is not None and k >= max_clips:
      return
    r = resolution or clip.frames.shape[1]
    t = min(clip.num_frames, len(clip.audio) // SAMPLES_PER_FRAME, clip.mel.shape[0] // 4)
    frames = media.resize(clip.frames[:t], r, r)
    yield PreparedJob(
        name=check_name(clip.clip_id), references=frames[:1],
        wav=np.asarray(clip.audio, np.float32)[:t * SAMPLES_PER_FRAME],
        windows=audio_lib.mel_windows(clip.mel, t), pose=frames, pose_index=np.arange(t),
        mouth=frames, mouth_index=np.arange(t), inputs={"clip": clip.clip_id})
