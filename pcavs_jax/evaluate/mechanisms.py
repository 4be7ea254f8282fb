"""Probes of what PC-AVS's encoders learned, on SynthTalk's exact truth: each mechanism measured
from the codes of a set's truth frames (`encode_set`, `mechanism_measures`).

  sync        audio-to-visual mouth retrieval: top-1 of each frame's true visual mouth feature
              among 8 candidates (the same frame of other triples, whose audio is another clip's),
              by cosine with the audio mouth feature (chance 1/8); its ceiling: what a perfect
              mouth reader scores (negatives showing the same mouth shape tie); lag: the frame
              offset where the per-clip-centred audio and visual mouth features correlate
              best (0 in sync).
  pose code   held-out R^2 of a linear read-out of the true yaw, pitch, roll from E_n's 12-d pose
              code of the truth frames (each triple read by a fit on the other triples).
  identity    E_i's top-1 identity classification of every frame of A's held-out clip (seen and
              self sets: identities with a training label).

`probe_codes` reads more out of the codes, and what G's pose and mouth follow
(scripts/probe_codes.py).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import numpy as np

MECHANISM_KEYS = ("sync_top1", "sync_top1_ceiling", "sync_lag", "pose_code_r2", "identity_top1")
POSE_ANGLES = ("yaw", "pitch", "roll")
POSE_KEYS = POSE_ANGLES + ("tx", "ty")
SYNC_CANDIDATES = 8


@functools.lru_cache(maxsize=8)
def _encoders(model):
  """Jitted E_n + E_a (mouth features, pose code) and E_i (class scores) of uint8 frames."""
  import jax
  import jax.numpy as jnp
  to_model = lambda frames: frames.astype(jnp.float32) / 127.5 - 1.0

  def codes(variables, frames, mel):
    visual = model.apply(variables, to_model(frames), method=model.encode_nonidentity)
    audio = model.apply(variables, mel, method=model.encode_audio)
    return visual["mouth"], visual["pose_code"], audio["mouth"]

  def identity(variables, frames):
    return model.apply(variables, to_model(frames), method=model.encode_identity)["class_scores"]

  return jax.jit(codes), jax.jit(identity)


def _batched(fn, arrays: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
  """fn over the rows of `arrays` in fixed batches (the last padded: one compiled shape)."""
  n = len(arrays[0])
  outs = []
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)
    res = fn(*(a[idx] for a in arrays))
    res = res if isinstance(res, tuple) else (res,)
    outs.append([np.asarray(r)[:n - start] for r in res])
  return [np.concatenate(parts) for parts in zip(*outs)]


def encode_set(model, variables, eval_set, batch_size: int = 64) -> dict[str, list[np.ndarray]]:
  """Per triple: E_n's visual mouth feature and pose code of the truth frames, E_a's mouth
  feature of C's mel windows, and (for triples with a training label) E_i's class scores of
  A's frames."""
  from pcavs_jax.data import audio as audio_lib
  codes_fn, identity_fn = _encoders(model)
  frames = np.concatenate([t.truth_frames for t in eval_set.triples])
  mel = np.concatenate([audio_lib.mel_windows(t.mel, t.num_frames)
                        for t in eval_set.triples]).astype(np.float32)
  visual, pose, audio = _batched(functools.partial(codes_fn, variables), [frames, mel], batch_size)
  cuts = np.cumsum([t.num_frames for t in eval_set.triples])[:-1]
  out = {"visual_mouth": np.split(visual, cuts), "pose_code": np.split(pose, cuts),
         "audio_mouth": np.split(audio, cuts), "class_scores": []}
  labelled = [t for t in eval_set.triples if 0 <= t.reference_label < model.num_classes]
  if labelled:
    refs = np.concatenate([t.reference_frames for t in labelled])
    (scores,) = _batched(functools.partial(identity_fn, variables), [refs], batch_size)
    cuts = np.cumsum([len(t.reference_frames) for t in labelled])[:-1]
    out["class_scores"] = list(zip([t.reference_label for t in labelled], np.split(scores, cuts)))
  return out


def _unit(x: np.ndarray) -> np.ndarray:
  return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)


def sync_negatives(audio_clips: list[str], candidates: int = SYNC_CANDIDATES) -> list[list[int]]:
  """Per clip, its retrieval negatives: the next candidates - 1 clips (cyclically) whose audio
  is another clip's."""
  n = len(audio_clips)
  return [[j for j in list(range(i + 1, n)) + list(range(i))
           if audio_clips[j] != audio_clips[i]][:candidates - 1] for i in range(n)]


def sync_ceiling(mouths: list[np.ndarray], audio_clips: list[str],
                 candidates: int = SYNC_CANDIDATES, tie: float = 1e-3) -> float:
  """The retrieval top-1 of a perfect mouth reader: per frame, 1 / (1 + the negatives whose
  true mouth (openness, width) equals the true one within `tie`), as a random tie-break scores.
  A frame shows only its mouth shape, so negatives with the same shape (a closed mouth in a
  pause, say) cannot be told apart by any visual feature."""
  scores = []
  for i, others in enumerate(sync_negatives(audio_clips, candidates)):
    for t, m in enumerate(mouths[i]):
      same = sum(np.abs(mouths[j][t % len(mouths[j])] - m).max() < tie for j in others)
      scores.append(1.0 / (1 + same))
  return float(np.mean(scores))


def _retrieval_hits(visual: list[np.ndarray], audio: list[np.ndarray], audio_clips: list[str],
                    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    candidates: int = SYNC_CANDIDATES) -> list[float]:
  """Per frame of every clip: 1 when its audio row is nearer (`similarity(cands, a)`, larger is
  nearer) its own visual row than the same frame of each negative clip, else 0; NaN without
  negatives."""
  hits = []
  for i, others in enumerate(sync_negatives(audio_clips, candidates)):
    for t in range(len(audio[i])):
      cand = np.stack([visual[i][t]] + [visual[j][t % len(visual[j])] for j in others])
      sims = similarity(cand, audio[i][t])
      hits.append(float(sims[0] > sims[1:].max()) if others else math.nan)
  return hits


def sync_retrieval(visual: list[np.ndarray], audio: list[np.ndarray], audio_clips: list[str],
                   candidates: int = SYNC_CANDIDATES, max_lag: int = 5) -> dict[str, float]:
  """Audio-to-visual mouth retrieval and the audio-mouth lag.

  Args:
    visual, audio: per clip, (T, F) visual and audio mouth features of the same frames.
    audio_clips: per clip, the id of its audio's clip (negatives come from other audio).
    candidates: the true visual feature and candidates - 1 others: the same frame of the next
      clips (cyclically) whose audio is another clip's.
    max_lag: largest frame offset searched.

  Returns:
    sync_top1: share of frames whose audio feature is nearest (cosine) the true visual one;
    sync_lag: the offset l maximising the mean correlation of audio[t] with visual[t + l] (each
    clip's features centred); sync_lag0: share of clips whose own best offset is 0.
  """
  hits = _retrieval_hits(visual, audio, audio_clips, lambda c, a: _unit(c) @ _unit(a), candidates)
  curves = []
  for v, a in zip(visual, audio):
    v, a = _unit(v - v.mean(0)), _unit(a - a.mean(0))
    curves.append([np.mean(np.sum(a[max(-l, 0):len(a) - max(l, 0)]
                                  * v[max(l, 0):len(v) + min(l, 0)], -1))
                   for l in range(-max_lag, max_lag + 1)])
  curves = np.asarray(curves)
  lags = np.arange(-max_lag, max_lag + 1)
  return {"sync_top1": float(np.mean(hits)) if hits and np.isfinite(hits).all() else math.nan,
          "sync_lag": float(lags[np.argmax(curves.mean(0))]),
          "sync_lag0": float(np.mean(lags[np.argmax(curves, axis=1)] == 0))}


def reader_top1(mouths: list[np.ndarray], audio_clips: list[str],
                r2_visual: float | Sequence[float], r2_audio: float | Sequence[float],
                candidates: int = SYNC_CANDIDATES, seed: int = 0) -> float:
  """The retrieval top-1 of mouth readers of a given precision, the ceiling of features that
  read the mouth that well: each side reads the true mouth (per key) plus independent Gaussian
  noise of (1 - R^2) times the key's variance, so its read-out has R^2 `r2_visual` /
  `r2_audio` (scalars or one per key), and candidates rank by distance (an exact tie counts
  as a miss, so R^2 1 on both sides is `sync_ceiling`'s job).

  Args:
    mouths: per clip, (T, K) true mouth shape (`render.MOUTH_KEYS`).
    audio_clips, candidates: as `sync_retrieval`.
  """
  rng = np.random.default_rng(seed)
  scale = np.concatenate(mouths).std(0)
  read = lambda r2: [m + rng.normal(size=m.shape) * scale * np.sqrt(1.0 - np.asarray(r2))
                     for m in mouths]
  hits = _retrieval_hits(read(r2_visual), read(r2_audio), audio_clips,
                         lambda c, a: -np.sum((c - a) ** 2, -1), candidates)
  return float(np.mean(hits))


def _truth(eval_set, keys: tuple[str, ...]) -> list[np.ndarray]:
  """Per triple, its (T, len(keys)) truth of the target frames."""
  return [np.stack([t.truth[k] for k in keys], 1) for t in eval_set.triples]


def _triple_groups(eval_set) -> np.ndarray:
  """Each frame's triple index: the groups a held-out read-out leaves out one at a time."""
  return np.concatenate([np.full(t.num_frames, i) for i, t in enumerate(eval_set.triples)])


def mechanism_measures(codes: dict[str, list[np.ndarray]], eval_set) -> dict[str, float]:
  """Sync, pose code and identity measures of one set from `encode_set`'s features (see the
  module docstring); identity_top1 is NaN for sets without training labels."""
  from pcavs_jax.data.synthtalk import render
  clips = [t.audio_clip for t in eval_set.triples]
  out = sync_retrieval(codes["visual_mouth"], codes["audio_mouth"], clips)
  out["sync_top1_ceiling"] = sync_ceiling(_truth(eval_set, render.MOUTH_KEYS), clips)
  r2 = heldout_r2(np.concatenate(codes["pose_code"]), np.concatenate(_truth(eval_set, POSE_ANGLES)),
                  _triple_groups(eval_set))
  out["pose_code_r2"] = float(np.mean(r2))
  out.update({f"pose_code_r2_{k}": float(v) for k, v in zip(POSE_ANGLES, r2)})
  scored = codes["class_scores"]
  out["identity_top1"] = float(np.mean(np.concatenate(
      [np.argmax(s, -1) == label for label, s in scored]))) if scored else math.nan
  return out


def heldout_r2(features: np.ndarray, targets: np.ndarray, groups: np.ndarray,
               ridge: float = 1e-3) -> np.ndarray:
  """Cross-validated R^2 of a ridge-regularised linear read-out of targets from features.

  Each group's rows are predicted by a fit on the other groups' rows (leave one group out; with
  fewer than 3 groups, three contiguous folds of rows), and R^2 is taken over all rows against
  the targets' overall mean. Scoring every row, not one held-out third, keeps a set of a few
  triples from being judged on the narrow pose range of two or three clips.

  Args:
    features: (N, F); targets: (N, K); groups: (N,) int, e.g. each row's triple.

  Returns:
    (K,) R^2: 1 for an exact linear code, <= 0 when the features tell nothing linear about the
    target.
  """
  x = np.asarray(features, np.float64)
  y = np.asarray(targets, np.float64)
  groups = np.asarray(groups)
  if len(np.unique(groups)) < 3:
    groups = (3 * np.arange(len(x))) // len(x)
  predicted = np.empty_like(y)
  for g in np.unique(groups):
    fit = groups != g
    mean, std = x[fit].mean(0), x[fit].std(0) + 1e-8
    design = lambda rows: np.concatenate([(x[rows] - mean) / std, np.ones((rows.sum(), 1))], 1)
    a = design(fit)
    w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ y[fit])
    predicted[~fit] = design(~fit) @ w
  resid = ((predicted - y) ** 2).sum(0)
  total = ((y - y.mean(0)) ** 2).sum(0)
  return 1.0 - resid / np.maximum(total, 1e-12)


def following(model, variables, eval_set, batch_size: int = 32) -> dict[str, dict]:
  """What G's pose and mouth follow: the generated frames' measured yaw, pitch, roll, mouth
  openness and width, per triple over its frames, against
  - the drivers' truth (reference fixed at A's frame 0, pose from B, audio from C: the scored
    case): correlation `follows_drivers`, and `drivers_slope`, the least-squares slope of the
    measure on the truth over all the set's frames (1: drawn to the full range; below 1: a
    flattened version, pulled towards the mean);
  - what the analyzer reads in the pose source's frames (B), in the same drives: correlation
    `follows_pose_source` (for the pose, the driver itself; for the mouth, near 0 unless the pose
    code carries B's mouth into the frame);
  - the reference's truth (references varying over A's frames, pose source fixed, C's audio):
    correlation `follows_reference` (near 0: E_i passes none of the reference's pose or mouth).
  Correlations are means over triples."""
  from pcavs_jax.data import audio as audio_lib
  from pcavs_jax.data.synthtalk import analyzer, render
  from pcavs_jax.evaluate import cross_driven, scoring
  from pcavs_jax.infer.runner import FrameDriver

  keys = POSE_ANGLES + render.MOUTH_KEYS
  driven = cross_driven.generate_cross_driven(model, variables, eval_set, batch_size)
  driver = FrameDriver(model, variables, batch_size)

  def drive_per_reference(references, mel, poses):
    """Frame i drawn with identity from references[i] alone (uint8)."""
    ids = [driver.encode_identity(r[None]) for r in references]
    return _batched(driver.drive, [np.stack([i[0] for i in ids]), np.stack([i[1] for i in ids]),
                                   mel, poses], driver.batch_size)[0]

  follows = {"follows_drivers": [], "follows_pose_source": [], "follows_reference": []}
  pairs = []   # (measured, truth) of the drivers' case, every frame
  for tr in eval_set.triples:
    t = tr.num_frames
    # The lag-0 correlation of the scoring's cross-correlation (NaN frames take the mean).
    corr = lambda measured, truth: [scoring.lagged_correlation(measured[k], truth[k][:t], 0)[2]
                                    for k in keys]
    measured = analyzer.analyze_frames(driven[tr.triple_id])
    follows["follows_drivers"].append(corr(measured, tr.truth))
    follows["follows_pose_source"].append(corr(measured,
                                               analyzer.analyze_frames(tr.pose_frames[:t])))
    pairs.append(np.stack([np.stack([measured[k], tr.truth[k][:t]], 1) for k in keys]))
    varied = drive_per_reference(tr.reference_frames[:t],
                                 audio_lib.mel_windows(tr.mel, t).astype(np.float32),
                                 np.repeat(tr.pose_frames[:1], t, axis=0))
    follows["follows_reference"].append(corr(analyzer.analyze_frames(varied), tr.reference_truth))
  report = {name: dict(zip(keys, np.mean(np.asarray(rows), 0).tolist()))
            for name, rows in follows.items()}
  pairs = np.concatenate(pairs, axis=1)   # (keys, frames, 2)
  report["drivers_slope"] = {}
  for i, k in enumerate(keys):
    measured, truth = pairs[i][np.isfinite(pairs[i]).all(1)].T
    report["drivers_slope"][k] = (float(np.polyfit(truth, measured, 1)[0])
                                  if len(truth) > 1 and np.ptp(truth) > 0 else math.nan)
  return report


def probe_codes(model, variables, eval_set, batch_size: int = 32) -> dict[str, dict[str, float]]:
  """What E_n's and E_a's codes carry and what G's pose and mouth follow, on a SynthTalk set.

  - `pose_code_r2` / `mouth_feature_r2` / `audio_mouth_r2`: held-out R^2 of a linear read-out of
    each truth quantity (pose keys, mouth keys) from the pose code / the visual mouth feature of
    the truth frames / the audio mouth feature, each triple read by a fit on the others
    (`heldout_r2`).
  - `sync`: the retrieval top-1 measured (`sync_retrieval`), that of mouth readers as precise as
    the two features' read-outs (`reader_top1` at their mouth R^2s), of readers at R^2 0.99, and
    of a perfect one (`sync_ceiling`).
  - `follows_drivers` / `drivers_slope` / `follows_pose_source` / `follows_reference`:
    `following`.
  """
  from pcavs_jax.data.synthtalk import render
  keys = POSE_KEYS + render.MOUTH_KEYS
  codes = encode_set(model, variables, eval_set, batch_size)
  truths, groups = np.concatenate(_truth(eval_set, keys)), _triple_groups(eval_set)
  report = {}
  for name, feats in (("pose_code_r2", codes["pose_code"]),
                      ("mouth_feature_r2", codes["visual_mouth"]),
                      ("audio_mouth_r2", codes["audio_mouth"])):
    report[name] = dict(zip(keys, heldout_r2(np.concatenate(feats), truths, groups).tolist()))
  clips = [t.audio_clip for t in eval_set.triples]
  mouths = _truth(eval_set, render.MOUTH_KEYS)
  r2 = lambda row: np.clip([report[row][k] for k in render.MOUTH_KEYS], 0.0, 1.0)
  report["sync"] = {
      "measured": sync_retrieval(codes["visual_mouth"], codes["audio_mouth"], clips)["sync_top1"],
      "reader_at_these_r2": reader_top1(mouths, clips, r2("mouth_feature_r2"),
                                        r2("audio_mouth_r2")),
      "reader_at_r2_0.99": reader_top1(mouths, clips, 0.99, 0.99),
      "perfect_reader": sync_ceiling(mouths, clips)}
  report.update(following(model, variables, eval_set, batch_size))
  return report
