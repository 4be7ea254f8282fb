"""Scores generated cross-driven videos against SynthTalk's exact truth, and the baselines.

Metrics per triple (then averaged over triples):
- ssim: mean per-frame SSIM (skimage, RGB, data range 255); 1 for the truth.
- psnr: PSNR over the whole clip (skimage), capped at 100 dB (identical frames).
- mouth_err: mean |openness| and |width| difference, each in units of its range [0, 1],
  between the analyzer's reading of the generated frames and of the truth frames.
- pose_err: mean over yaw, pitch and roll of |difference| / range (60, 40, 30 degrees), same
  readings; yaw_err, pitch_err, roll_err in degrees.
- identity_err: the analyzer's identity descriptor (skin, lip, hair and background colours, and
  the head outline's width) of generated vs truth frames: the mean of the colour distances /
  (255 sqrt 3) and the width difference / 12 aligned units (the identities' width range).
  An appearance measure read without the truth, like the pose and mouth.
- lag: audio-to-mouth lag in frames, the peak of the normalised cross-correlation of the
  generated mouth openness with the truth's (which C's audio decides) over +-max_lag frames;
  positive when the generated mouth moves late. sync: that peak's correlation; sync0: the
  correlation at lag 0. A mouth that does not move (read openness std < 0.02, the analyzer's
  jitter on a still mouth) has sync 0 and no lag (NaN).

Comparing analyzer readings of generated and truth frames (not the stored truth values) makes
the truth score exactly zero error; the analyzer's own error on truth frames is reported by the
tests and the closing note.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from skimage import metrics

from pcavs_jax.data.synthtalk import analyzer
from pcavs_jax.data.synthtalk import render
from pcavs_jax.data.synthtalk.eval_sets import CrossTriple, EvalSet

POSE_RANGES = {"yaw": 60.0, "pitch": 40.0, "roll": 30.0}
HEAD_WIDTH_RANGE = 12.0
STILL_STD = 0.02     # a mouth whose read openness varies less than this does not move
BASELINES = ("static_mouth", "reference_pose", "other_audio", "other_identity", "copy_reference")
SUMMARY_KEYS = ("ssim", "psnr", "mouth_err", "mouth_open_err", "mouth_width_err", "pose_err",
                "yaw_err", "pitch_err", "roll_err", "identity_err", "lag", "abs_lag", "sync",
                "sync0", "analysis_failures")


def to_uint8(frames: np.ndarray, size: int,
             value_range: tuple[float, float] | None = None) -> np.ndarray:
  """Generated frames as (T, size, size, 3) uint8.

  Floats are read as [-1, 1] (a tanh output) when any value is negative, else [0, 1] when all
  are <= 1, else [0, 255], unless `value_range` says.
  """
  x = np.asarray(frames)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"generated frames must be (T, H, W, 3), got {x.shape}")
  if x.dtype != np.uint8:
    x = x.astype(np.float32)
    if value_range is None:
      value_range = (-1.0, 1.0) if x.min() < 0 else (0.0, 1.0) if x.max() <= 1.0 else (0.0, 255.0)
    lo, hi = value_range
    x = np.clip(np.rint((x - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
  if x.shape[1:3] != (size, size):
    interp = cv2.INTER_AREA if x.shape[1] > size else cv2.INTER_LINEAR
    x = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in x])
  return x


def _psnr(gen: np.ndarray, truth: np.ndarray) -> float:
  """PSNR over the whole clip, 100 dB for identical frames."""
  mse = float(np.mean((gen.astype(np.float64) - truth.astype(np.float64)) ** 2))
  return 100.0 if mse == 0 else min(100.0, float(metrics.peak_signal_noise_ratio(
      truth, gen, data_range=255)))


def lagged_correlation(g: np.ndarray, h: np.ndarray, max_lag: int) -> tuple[float, float, float]:
  """(lag, peak correlation, correlation at lag 0) of g against h; g[t] ~ h[t - lag]."""
  ok = np.isfinite(g) & np.isfinite(h)
  if ok.sum() < 4:
    return math.nan, 0.0, 0.0
  # Unreadable frames take the clip's mean, which adds nothing to the correlation.
  g, h = np.where(ok, g, g[ok].mean()), np.where(ok, h, h[ok].mean())
  if np.std(g) < STILL_STD or np.std(h) < STILL_STD:
    return math.nan, 0.0, 0.0
  corr = {}
  for lag in range(-max_lag, max_lag + 1):
    a = g[max(lag, 0):len(g) + min(lag, 0)]
    b = h[max(-lag, 0):len(h) - max(lag, 0)]
    if len(a) < 4:
      continue
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    corr[lag] = float((a * b).sum() / den) if den > 0 else 0.0
  best = max(corr, key=lambda k: (corr[k], -abs(k)))
  return float(best), corr[best], corr.get(0, 0.0)


def _identity_distance(read: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> np.ndarray:
  parts = [np.linalg.norm(read[k] - ref[k], axis=-1) / (255.0 * math.sqrt(3))
           for k in ("skin", "lips", "hair", "background")]
  parts.append(np.abs(read["head_width"] - ref["head_width"]) / HEAD_WIDTH_RANGE)
  return np.nanmean(np.stack(parts, 1), axis=1)


def score_triple(generated: np.ndarray, triple: CrossTriple, max_lag: int = 5,
                 value_range: tuple[float, float] | None = None) -> dict[str, float]:
  """Scores one generated video (T', H, W, 3) against its triple; compares min(T, T') frames.

  Frames the analyzer cannot read count in `analysis_failures`; a measure no frame gives is NaN.
  """
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    return _score_triple(generated, triple, max_lag, value_range)


def _score_triple(generated, triple, max_lag, value_range) -> dict[str, float]:
  truth = triple.truth_frames
  gen = to_uint8(generated, truth.shape[1], value_range)
  t = min(len(gen), len(truth))
  if t == 0:
    raise ValueError(f"triple {triple.triple_id}: no generated frames")
  gen, truth = gen[:t], truth[:t]
  ref = {k: v[:t] for k, v in triple.readout.items()}
  read = analyzer.analyze_frames(gen)
  out = {
      "ssim": float(np.mean([metrics.structural_similarity(g, h, channel_axis=-1, data_range=255)
                             for g, h in zip(gen, truth)])),
      "psnr": _psnr(gen, truth),
  }
  d_open = np.abs(read["mouth_open"] - ref["mouth_open"])
  d_width = np.abs(read["mouth_width"] - ref["mouth_width"])
  out["mouth_open_err"] = float(np.nanmean(d_open))
  out["mouth_width_err"] = float(np.nanmean(d_width))
  out["mouth_err"] = 0.5 * (out["mouth_open_err"] + out["mouth_width_err"])
  pose = []
  for k, rng in POSE_RANGES.items():
    d = np.abs(read[k] - ref[k])
    out[f"{k}_err"] = float(np.nanmean(d))
    pose.append(d / rng)
  out["pose_err"] = float(np.nanmean(np.stack(pose)))
  out["identity_err"] = float(np.nanmean(_identity_distance(read, ref)))
  lag, sync, sync0 = lagged_correlation(read["mouth_open"], ref["mouth_open"], max_lag)
  out.update(lag=lag, abs_lag=abs(lag), sync=sync, sync0=sync0)
  out["analysis_failures"] = float(np.mean(~np.isfinite(read["yaw"])))
  return out


def score(generated: Mapping[str, np.ndarray], eval_set: EvalSet, max_lag: int = 5,
          value_range: tuple[float, float] | None = None) -> dict:
  """Scores generated videos of the cross-driven set.

  Args:
    generated: triple_id -> (T, H, W, 3) frames (uint8, or floats; see `to_uint8`). Other
      sizes are resized to the set's resolution. Every triple of the set must be present.
    eval_set: the cross-driven set.
    max_lag: largest audio-to-mouth lag searched, in frames.
    value_range: the float frames' range, when not to be guessed.

  Returns:
    The summary metrics (means over triples; `SUMMARY_KEYS`, lag/abs_lag over the triples
    where the mouth moves) and `per_triple`: triple_id -> metrics.
  """
  missing = [t.triple_id for t in eval_set.triples if t.triple_id not in generated]
  if missing:
    raise KeyError(f"no generated frames for triples {missing}")
  per = {t.triple_id: score_triple(generated[t.triple_id], t, max_lag, value_range)
         for t in eval_set.triples}
  summary = summarise(per)
  summary["num_triples"] = len(per)
  summary["per_triple"] = per
  return summary


def summarise(per_triple: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """Means over triples of their scores (`SUMMARY_KEYS`), NaN-aware: a measure no triple
  gives is NaN."""
  return {k: float(np.nanmean([p[k] for p in per_triple.values()]))
          if any(np.isfinite(p[k]) for p in per_triple.values()) else math.nan
          for k in SUMMARY_KEYS}


def _still(truth: Mapping[str, np.ndarray], keys: Sequence[str], t: int) -> dict[str, np.ndarray]:
  return {k: np.full(t, truth[k][0], np.float32) for k in keys}


def baseline_frames(eval_set: EvalSet, name: str) -> dict[str, np.ndarray]:
  """A baseline's videos, drawn by the renderer.

  - static_mouth: the truth's pose, with the reference frame's own (static) mouth.
  - reference_pose: the truth's mouth, with the reference frame's own pose held.
  - other_audio: the truth's pose, with the mouth of another clip's audio.
  - other_identity: the truth's pose and mouth on another test identity.
  - copy_reference: the reference frame repeated.
  """
  out = {}
  for tr in eval_set.triples:
    t = tr.num_frames
    truth = {k: v for k, v in tr.truth.items()}
    params = tr.identity_params
    if name == "static_mouth":
      truth.update(_still(tr.reference_truth, render.MOUTH_KEYS, t))
    elif name == "reference_pose":
      truth.update(_still(tr.reference_truth, render.POSE_KEYS, t))
    elif name == "other_audio":
      truth.update({k: tr.other_mouth[k][:t] for k in render.MOUTH_KEYS})
    elif name == "other_identity":
      params = tr.other_identity_params
    elif name == "copy_reference":
      out[tr.triple_id] = np.repeat(tr.reference_frames[:1], t, axis=0)
      continue
    else:
      raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
    out[tr.triple_id] = render.render_frames(params, truth, eval_set.resolution)
  return out


def baseline_scores(eval_set: EvalSet, names: Sequence[str] = BASELINES,
                    include_truth: bool = True, max_lag: int = 5) -> dict[str, dict]:
  """Scores of the baselines (and of the truth itself, the zero-error reference)."""
  out = {}
  if include_truth:
    out["truth"] = score({t.triple_id: t.truth_frames for t in eval_set.triples}, eval_set,
                         max_lag)
  for name in names:
    out[name] = score(baseline_frames(eval_set, name), eval_set, max_lag)
  return out
