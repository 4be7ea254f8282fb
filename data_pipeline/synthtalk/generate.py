"""SynthTalk clips: identities, splits, head motion, and the assembly of `Clip` records.

Every random quantity has its own stream, keyed by (seed, purpose, identity, clip), so any clip
can be regenerated on its own and the head motion shares no randomness with the audio.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np

from pcavs_jax.data.synthtalk import identity as ident
from data_pipeline.synthtalk import speech
from pcavs_jax.data.synthtalk import render
from pcavs_jax.data import audio as audio_lib
from pcavs_jax.data.clips import Clip

STREAM_IDENTITY, STREAM_PHONEMES, STREAM_AUDIO, STREAM_POSE = range(4)

# Half-ranges of the head motion: degrees for the angles, image fractions for the shifts.
POSE_RANGE = {"yaw": 30.0, "pitch": 20.0, "roll": 15.0, "tx": 0.03, "ty": 0.03}
TRUTH_KEYS = render.POSE_KEYS + render.MOUTH_KEYS + ("phoneme",)


def stream(seed: int, purpose: int, identity: int, clip: int = 0) -> np.random.Generator:
  """The random stream of one purpose for one identity (and clip)."""
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, identity, clip)))


def identity_name(index: int) -> str:
  return f"synth_{index:04d}"


def clip_name(identity: int, clip: int) -> str:
  return f"{identity_name(identity)}/{clip:03d}"


def identity_params(seed: int, index: int) -> dict[str, np.ndarray]:
  """Identity `index`'s parameters under `seed`."""
  return ident.sample_identity(stream(seed, STREAM_IDENTITY, index), index)


@dataclasses.dataclass(frozen=True)
class Split:
  """Identity indices of the train and test splits (disjoint)."""
  train: tuple[int, ...]
  test: tuple[int, ...]


def split_identities(num_identities: int, test_fraction: float) -> Split:
  """The last ceil(N * fraction) identities are the test split.

  With a positive fraction and N >= 2 the test split has at least one identity and the train
  split keeps at least one; a single identity is all train.

  Identities are i.i.d., so the last ones are as random as any; keeping train labels
  0..n_train-1 contiguous suits the identity classifier.
  """
  n_test = 0
  if num_identities >= 2 and test_fraction > 0:
    n_test = min(max(math.ceil(num_identities * test_fraction), 1), num_identities - 1)
  n_train = num_identities - n_test
  return Split(tuple(range(n_train)), tuple(range(n_train, num_identities)))


def sample_pose(rng: np.random.Generator, num_frames: int) -> dict[str, np.ndarray]:
  """Smooth random head motion at 25 fps.

  Each of yaw, pitch, roll, tx, ty is an offset plus three sinusoids (0.1-0.8 Hz) whose
  amplitudes sum with the offset to at most that quantity's half-range.
  """
  t = np.arange(num_frames) / 25.0
  out = {}
  for key, half in POSE_RANGE.items():
    offset = rng.uniform(-0.6, 0.6) * half
    total = rng.uniform(0.15, 1.0) * (half - abs(offset))
    weights = rng.dirichlet(np.ones(3))
    value = np.full(num_frames, offset)
    for w in weights:
      value += total * w * np.sin(2 * np.pi * rng.uniform(0.1, 0.8) * t + rng.uniform(0, 2 * np.pi))
    out[key] = value.astype(np.float32)
  return out


def clip_truth(seed: int, identity: int, clip: int, num_frames: int,
               params: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """A clip's per-frame truth and its waveform (no frames drawn)."""
  num_samples = num_frames * speech.SAMPLES_PER_FRAME
  segments = speech.sample_phonemes(stream(seed, STREAM_PHONEMES, identity, clip), num_samples)
  wav = speech.synthesize(segments, params, stream(seed, STREAM_AUDIO, identity, clip),
                          num_samples)
  mouth_open, mouth_width = speech.mouth_track(segments, num_frames)
  truth = sample_pose(stream(seed, STREAM_POSE, identity, clip), num_frames)
  truth.update(mouth_open=mouth_open, mouth_width=mouth_width,
               phoneme=speech.dominant_phoneme(segments, num_frames))
  return {k: np.asarray(truth[k], np.float32) for k in TRUTH_KEYS}, wav


def make_clip(seed: int, identity: int, clip: int, num_frames: int, resolution: int,
              pose_twin: int | None = None) -> Clip:
  """Generates one clip: frames, audio, mel, truth and identity parameters.

  Args:
    seed: dataset seed.
    identity: identity index (also the class label).
    clip: clip index within the identity.
    num_frames: frames at 25 fps.
    resolution: frame size in pixels.
    pose_twin: an identity index: the clip's pose and mouth also drawn on that identity
      (`Clip.pose_frames`); None: none.
  """
  params = identity_params(seed, identity)
  truth, wav = clip_truth(seed, identity, clip, num_frames, params)
  frames = render.render_frames(params, truth, resolution)
  twin = (None if pose_twin is None
          else render.render_frames(identity_params(seed, pose_twin), truth, resolution))
  return Clip(clip_id=clip_name(identity, clip), identity=identity_name(identity),
              label=identity, frames=frames, audio=wav, mel=audio_lib.melspectrogram(wav),
              truth=truth, identity_params=params, source=f"synthtalk:{seed}", pose_frames=twin)


def pose_twin(identities: Sequence[int], identity: int, clip: int) -> int | None:
  """The identity a clip's pose twin is drawn on: another of `identities`, a different one for
  each clip of an identity (None when there is no other)."""
  if len(identities) < 2:
    return None
  k = list(identities).index(identity)
  return identities[(k + 1 + clip % (len(identities) - 1)) % len(identities)]


def _make(job: tuple) -> Clip:
  return make_clip(*job)


def generate_clips(seed: int, identities: tuple[int, ...] | list[int], clips_per_identity: int,
                   num_frames: int, resolution: int, workers: int = 1,
                   first_clip: int = 0, pose_twins: bool = False) -> Iterator[Clip]:
  """Yields the clips of the given identities, in (identity, clip) order.

  Args:
    workers: processes to render with; the clips (and their order) do not depend on it.
    first_clip: index of each identity's first clip (clips first_clip, first_clip + 1, ...;
      e.g. held-out clips of training identities after their training clips).
    pose_twins: each clip also drawn on another of `identities` (`pose_twin`).
  """
  jobs = [(seed, i, c, num_frames, resolution,
           pose_twin(identities, i, c) if pose_twins else None)
          for i in identities for c in range(first_clip, first_clip + clips_per_identity)]
  if workers <= 1:
    yield from map(_make, jobs)
    return
  import multiprocessing
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    yield from pool.imap(_make, jobs, chunksize=1)
