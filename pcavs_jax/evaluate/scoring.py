"""Scores generated cross-driven videos against SynthTalk's exact truth, and the baselines.

Metrics per triple (then averaged over triples):
- ssim, psnr: `metrics.ssim` and `metrics.psnr`, the project's one definition of each (means over
  frames; PSNR in dB, each frame capped at 100); SSIM 1 and PSNR 100 for the truth.
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

Baselines (`baseline_frames`) are scored once, when a set is written, into the set's baselines file
(`eval_sets.baselines_path`); `read_baselines` is its one reader. The targets are judged by
ratios to two of them (`target_ratios`). `evaluate_synthtalk` scores generated video files
(`pcavs-jax evaluate --synthtalk`).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pcavs_jax.data import media
from pcavs_jax.data.media import InputError
from pcavs_jax.data.synthtalk import analyzer, eval_sets, render
from pcavs_jax.data.synthtalk.eval_sets import CrossTriple, EvalSet
from pcavs_jax.evaluate import metrics, videos

POSE_RANGES = {"yaw": 60.0, "pitch": 40.0, "roll": 30.0}
HEAD_WIDTH_RANGE = 12.0
STILL_STD = 0.02     # a mouth whose read openness varies less than this does not move
BASELINES = ("static_mouth", "reference_pose", "other_audio", "other_identity", "copy_reference")
SUMMARY_KEYS = ("ssim", "psnr", "mouth_err", "mouth_open_err", "mouth_width_err", "pose_err",
                "yaw_err", "pitch_err", "roll_err", "identity_err", "lag", "abs_lag", "sync",
                "sync0", "analysis_failures")
# The ratios the targets are judged by: ratio -> (the error, the baseline it is divided by).
RATIO_BASELINES = {"mouth_ratio": ("mouth_err", "static_mouth"),
                   "pose_ratio": ("pose_err", "reference_pose")}


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
  return media.resize(x, size, size)


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


def score_triple(generated: np.ndarray | None, triple: CrossTriple, max_lag: int = 5,
                 value_range: tuple[float, float] | None = None) -> dict[str, float]:
  """Scores one generated video (T', H, W, 3) against its triple; compares min(T, T') frames.

  Frames the analyzer cannot read count in `analysis_failures`; a measure no frame gives is NaN.
  None scores the truth frames themselves, with their stored reading (`readout`).
  """
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    return _score_triple(generated, triple, max_lag, value_range)


def _score_triple(generated, triple, max_lag, value_range) -> dict[str, float]:
  truth = triple.truth_frames
  gen = truth if generated is None else to_uint8(generated, truth.shape[1], value_range)
  t = min(len(gen), len(truth))
  if t == 0:
    raise ValueError(f"triple {triple.triple_id}: no generated frames")
  gen, truth = gen[:t], truth[:t]
  ref = {k: v[:t] for k, v in triple.readout.items()}
  read = ref if generated is None else analyzer.analyze_frames(gen)
  out = {"ssim": metrics.ssim(gen, truth), "psnr": metrics.psnr(gen, truth)}
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


def _score_job(job: tuple) -> dict[str, float]:
  return score_triple(*job)


def _score_jobs(jobs: list[tuple], workers: int) -> list[dict[str, float]]:
  """`score_triple` of each (generated, triple, max_lag, value_range), in `workers` processes."""
  if workers <= 1 or len(jobs) <= 1:
    return [_score_job(job) for job in jobs]
  import multiprocessing
  with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
    return pool.map(_score_job, jobs, chunksize=1)


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
  return _summary({t.triple_id: score_triple(generated[t.triple_id], t, max_lag, value_range)
                   for t in eval_set.triples})


def _summary(per: dict[str, dict[str, float]]) -> dict:
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
                    include_truth: bool = True, max_lag: int = 5, workers: int = 1
                    ) -> dict[str, dict]:
  """Scores of the baselines (and of the truth itself, the zero-error reference, read from
  the set's `readout`), their triples scored in `workers` processes."""
  rows = (["truth"] if include_truth else []) + list(names)
  frames = {name: baseline_frames(eval_set, name) for name in names}
  jobs = [(frames[name][t.triple_id] if name in frames else None, t, max_lag, None)
          for name in rows for t in eval_set.triples]
  per = iter(_score_jobs(jobs, workers))
  return {name: _summary({t.triple_id: next(per) for t in eval_set.triples}) for name in rows}


# ------------------------------------------------------------------- stored baselines, ratios


def target_ratios(model: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]]
                  ) -> dict[str, float]:
  """The ratios the targets are judged by: mouth error / static-mouth baseline's, pose error /
  reference-pose baseline's."""
  return {ratio: model[key] / baselines[name][key]
          for ratio, (key, name) in RATIO_BASELINES.items()}


def read_baselines(set_path: str | os.PathLike) -> dict[str, dict]:
  """The baselines' scores stored beside a set (`baseline_scores`, with 'per_triple'):
  {name: summary}; {} when the set was written without them."""
  path = eval_sets.baselines_path(set_path)
  if not path.exists():
    return {}
  return {name: s for name, s in json.loads(path.read_text()).items()
          if isinstance(s, dict) and "per_triple" in s}


def baseline_rows(set_path: str | os.PathLike, eval_set: EvalSet,
                  triples: Sequence[str] | None = None) -> dict[str, dict]:
  """The baselines' summaries over `triples` (default: all): from the stored scores, else
  the ratio baselines and copy_reference scored now."""
  ids = list(triples or [t.triple_id for t in eval_set.triples])
  stored = read_baselines(set_path)
  if not stored:
    sub = EvalSet(eval_set.resolution, [eval_set[i] for i in ids])
    stored = baseline_scores(sub, names=tuple(n for _, n in RATIO_BASELINES.values()) +
                             ("copy_reference",))
  return {name: summarise({i: s["per_triple"][i] for i in ids}) for name, s in stored.items()}


# ------------------------------------------------------------------------ generated video files


def evaluate_synthtalk(generated: str | os.PathLike, eval_set_path: str | os.PathLike, *,
                       max_lag: int = 5, cpbd_every: int = 1) -> dict[str, Any]:
  """Scores generated cross-driven videos (`<triple_id>.mp4` or frames folders) on SynthTalk.

  The exact measures come from `score`, with the CPBD of the generated frames
  (`metrics.mean_cpbd`); triples without a generated video are listed as missing and left out
  of the means. The stored baselines' summaries (`read_baselines`) are reported beside them.

  Raises:
    InputError: unreadable inputs, or no triple has a generated video.
  """
  es_path = pathlib.Path(eval_set_path)
  if not es_path.exists():
    raise InputError(es_path, "SynthTalk evaluation set not found", "missing")
  eval_set = eval_sets.load_eval_set(es_path)
  gens = videos.collect(generated)
  present = [tr for tr in eval_set.triples if tr.triple_id in gens]
  missing = [tr.triple_id for tr in eval_set.triples if tr.triple_id not in gens]
  if not present:
    raise InputError(generated, f"no generated video named like the set's triples "
                                f"({eval_set.triples[0].triple_id}.mp4, ...)", "missing")
  frames = {tr.triple_id: videos.read_frames(gens[tr.triple_id]) for tr in present}
  summary = score(frames, EvalSet(eval_set.resolution, present), max_lag)
  per = summary.pop("per_triple")
  for tid, f in frames.items():
    per[tid]["cpbd"] = metrics.mean_cpbd(to_uint8(f, eval_set.resolution), cpbd_every)
  summary["cpbd"] = metrics.nanmean([p["cpbd"] for p in per.values()])
  notes = []
  if missing:
    notes.append(f"{len(missing)} of {len(eval_set)} triples have no generated video: "
                 "left out of the means")
  baselines = {name: {k: v for k, v in s.items() if k != "per_triple"}
               for name, s in read_baselines(es_path).items()}
  if baselines and missing:
    notes.append("baselines are scored on all triples")
  return {"mode": "synthtalk", "generated": str(generated), "eval_set": str(es_path),
          "metrics": summary, "per_video": per, "missing": missing, "baselines": baselines,
          "notes": notes, "not_supported": videos.NOT_SUPPORTED}
