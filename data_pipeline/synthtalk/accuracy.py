"""The analyzer's error on rendered frames whose truth is known: clean, blurred and noisy.

  python scripts/analyzer_accuracy.py --cases 200 --resolution 64
"""
from __future__ import annotations

import cv2
import numpy as np

from data_pipeline.synthtalk import generate
from pcavs_jax.data.synthtalk import analyzer
from pcavs_jax.data.synthtalk import render

CONDITIONS = ("clean", "blurred", "noisy", "blurred+noisy")
KEYS = ("yaw", "pitch", "roll", "tx", "ty", "mouth_open", "mouth_width")


def degrade(frame: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
  """A generator-like degradation: Gaussian blur (sigma 1 px at 64 px) and / or noise (8/255)."""
  if "blurred" in kind:
    frame = cv2.GaussianBlur(frame, (0, 0), frame.shape[0] / 64)
  if "noisy" in kind:
    frame = np.clip(np.rint(frame + rng.normal(0, 8, frame.shape)), 0, 255).astype(np.uint8)
  return frame


def analyzer_errors(kind: str, num_cases: int, resolution: int, seed: int = 42,
                    keys: tuple[str, ...] = KEYS) -> dict[str, np.ndarray]:
  """Per-case |read - truth| / range for random identities, poses and mouths (NaN: unreadable)."""
  rng = np.random.default_rng(seed)
  errors = {k: [] for k in keys}
  for i in range(num_cases):
    params = generate.identity_params(77, i)
    truth = {k: rng.uniform(-h, h) for k, h in generate.POSE_RANGE.items()}
    truth.update(mouth_open=rng.uniform(0, 1) if i % 4 else 0.0, mouth_width=rng.uniform(0, 1))
    frame = render.render_frame(params, **truth, resolution=resolution)
    try:
      read = analyzer.analyze_frame(degrade(frame, kind, rng))
    except analyzer.AnalysisError:
      read = {k: np.nan for k in keys}
    for k in keys:
      errors[k].append(abs(read[k] - truth[k]) / analyzer.RANGES[k])
  return {k: np.asarray(v, np.float64) for k, v in errors.items()}
