"""The official audio front-end (DESIGN.md §4): 16 kHz mono speech to the mel windows E_a reads.

The official code computes its STFT with the `lws` package ('speech' mode). That STFT is not
librosa's centred one; `stft_magnitude` reproduces it with numpy's rfft.
"""
from __future__ import annotations

import functools

import numpy as np

from pcavs_jax.data.clips import MEL_HOPS_PER_FRAME, SAMPLE_RATE, SAMPLES_PER_FRAME

N_FFT = 1280
HOP = 160
NUM_MELS = 80
FMIN = 125.0
FMAX = 7600.0
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
TARGET_RMS = 0.1
WINDOW_FRAMES = 5       # a mel window spans 5 video frames = 20 hops


@functools.lru_cache(maxsize=1)
def analysis_window() -> np.ndarray:
  """The lws 'speech' analysis window: a sqrt-Hann normalised for perfect reconstruction."""
  k = np.arange(N_FFT, dtype=np.float64)
  w0 = np.sqrt(0.5 * (1.0 - np.cos(2.0 * np.pi * (2.0 * k + 1.0) / (2 * N_FFT))))
  overlap = (w0.reshape(N_FFT // HOP, HOP) ** 2).sum(axis=0)  # n[k mod 160]
  return w0 / np.sqrt(np.tile(overlap, N_FFT // HOP))


@functools.lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
  """Slaney mel filterbank (80, 641), as librosa builds it."""
  import librosa  # deferred: importing librosa costs seconds
  return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX)


def rms_normalise(wav: np.ndarray, target_rms: float = TARGET_RMS) -> np.ndarray:
  """Scales a waveform to the official RMS of 0.1.

  Raises:
    ValueError: if the waveform is silent (RMS 0), since it cannot be normalised.
  """
  wav = np.asarray(wav, np.float64)
  rms = float(np.sqrt(np.mean(wav ** 2))) if wav.size else 0.0
  if rms < 1e-8:
    raise ValueError("audio is silent (RMS 0): nothing to drive the mouth with")
  return (wav * (target_rms / rms)).astype(np.float32)


def stft_magnitude(wav: np.ndarray) -> np.ndarray:
  """|STFT| with lws framing: (M, 641), M = ceil((len + 1120) / 160)."""
  wav = np.asarray(wav, np.float64)
  padded_len = -(-(len(wav) + N_FFT - HOP) // HOP) * HOP
  num_frames = padded_len // HOP
  padded = np.zeros(padded_len + N_FFT, np.float64)  # zeros past the end for the last frames
  padded[N_FFT - HOP:N_FFT - HOP + len(wav)] = wav
  idx = np.arange(num_frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
  return np.abs(np.fft.rfft(padded[idx] * analysis_window(), axis=1))


def melspectrogram(wav: np.ndarray, normalise_rms: bool = True) -> np.ndarray:
  """The official normalised log-mel of a 16 kHz mono waveform.

  Args:
    wav: (S,) float waveform at 16 kHz.
    normalise_rms: scale to RMS 0.1 first, as the official loader does.

  Returns:
    (M, 80) float32 in [0, 1], M = ceil((S + 1120) / 160): 4 hops per 25 fps frame.
  """
  wav = np.asarray(wav)
  if wav.ndim != 1:
    raise ValueError(f"audio must be a 1-D mono waveform, got shape {wav.shape}")
  if normalise_rms:
    wav = rms_normalise(wav)
  mel = mel_basis() @ stft_magnitude(wav).T
  db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
  return np.clip((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB, 0.0, 1.0).T.astype(np.float32)


def num_video_frames(num_samples: int) -> int:
  """Video frames at 25 fps covered by `num_samples` of 16 kHz audio."""
  return num_samples // SAMPLES_PER_FRAME


def mel_windows(mel: np.ndarray, frames: np.ndarray | int) -> np.ndarray:
  """The (80, 20) windows E_a reads for video frames.

  The window of frame t spans hops [4 (t - 2), 4 (t - 2) + 20); hops outside the mel (around the
  first two and last two frames) are edge-padded, so every frame of a clip has a window.

  Args:
    mel: (M, 80) mel of the clip.
    frames: frame indices (array of any shape), or a Python int n meaning frames 0..n-1.

  Returns:
    frames.shape + (80, 20).
  """
  frames = np.arange(frames) if isinstance(frames, (int, np.integer)) else np.asarray(frames)
  start = MEL_HOPS_PER_FRAME * (frames - 2)
  idx = start[..., None] + np.arange(MEL_HOPS_PER_FRAME * WINDOW_FRAMES)
  return np.swapaxes(mel[np.clip(idx, 0, mel.shape[0] - 1)], -1, -2)
