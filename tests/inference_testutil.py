"""Inputs shared by the generation and evaluation tests: a tiny random-weight checkpoint, a real
face photo (skimage's astronaut), speech-like test audio and a pose video made from the photo."""
from __future__ import annotations

import pathlib

import numpy as np
import soundfile

from pcavs_jax.data import media

TINY = "variant=tiny"


def tiny_checkpoint(out_dir: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """An exported checkpoint of the tiny 64-px model with random weights (no init compile)."""
  from configs.default import get_config
  from pcavs_jax.checkpoint import save_export
  from pcavs_jax.infer.runner import random_variables
  from pcavs_jax.models.pcavs import build_model
  model_config = get_config(TINY).model
  variables = random_variables(build_model(model_config), seed)
  return save_export(out_dir, variables, model_config, source="random weights (tests)")


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
  """A voiced buzz (120 Hz harmonics) whose loudness and timbre change at syllable rate."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(round(seconds * sr))) / sr
  f0 = 120.0 * (1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
  phase = 2 * np.pi * np.cumsum(f0) / sr
  formant = 1.0 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
  voice = sum(np.sin(k * phase) / k * (1.0 + formant * (k in (3, 4, 7))) for k in range(1, 20))
  envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
  wav = voice * envelope + 0.02 * rng.standard_normal(t.size)
  return (0.3 * wav / np.max(np.abs(wav))).astype(np.float32)


def write_wav(path: pathlib.Path, seconds: float = 1.0, sr: int = 16000, channels: int = 1,
              subtype: str = "PCM_16", silent: bool = False) -> pathlib.Path:
  wav = np.zeros(int(seconds * sr), np.float32) if silent else speech_like(seconds, sr)
  data = wav if channels == 1 else np.stack([wav] * channels, axis=1)
  soundfile.write(str(path), data, sr, subtype=subtype)
  return path


def astronaut() -> np.ndarray:
  from skimage import data
  return data.astronaut()


def write_astronaut(path: pathlib.Path) -> pathlib.Path:
  media.write_image(path, astronaut())
  return path


def write_pose_video(path: pathlib.Path, frames: int = 10, audio_seconds: float | None = None
                     ) -> pathlib.Path:
  """The astronaut photo panned and turned a little per frame (a head that moves)."""
  import cv2
  img = astronaut()
  h, w = img.shape[:2]
  out = []
  for i in range(frames):
    a = 4.0 * np.sin(i / 3.0)
    m = cv2.getRotationMatrix2D((w / 2, h / 3), a, 1.0)
    m[:, 2] += (3 * np.sin(i / 2.0), 2 * np.cos(i / 4.0))
    out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
  audio = None if audio_seconds is None else speech_like(audio_seconds)
  media.write_video(path, np.stack(out), audio=audio)
  return path
