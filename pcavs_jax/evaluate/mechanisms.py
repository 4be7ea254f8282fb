"""SynthTalk's evaluation of a checkpoint: each mechanism of PC-AVS measured, on identities seen
in training and on unseen ones, beside the baselines.

Sets (`eval_sets.set_paths`; each triple drives identity from clip A's first frame, head pose
from clip B's frames and mouth from clip C's audio, scaled by the model's audio mouth weight):
  unseen  test identities (`eval_set.npz`);
  seen    held-out clips of training identities (`seen_set.npz`);
  self    training clips driven by themselves (`self_set.npz`, the memorisation check).

Measures per set (`mechanism_measures`, `generation_rows`):
  sync        audio-to-visual mouth retrieval: top-1 of each frame's true visual mouth feature
              among 8 candidates (the same frame of other triples, whose audio is another clip's),
              by cosine with the audio mouth feature (chance 1/8); its ceiling: what a perfect
              mouth reader scores (negatives showing the same mouth shape tie); lag: the frame
              offset where the per-clip-centred audio and visual mouth features correlate
              best (0 in sync).
  pose code   held-out R^2 of a linear read-out of the true yaw, pitch, roll from E_n's 12-d pose
              code of the truth frames (fitted on two thirds of the triples, scored on the rest).
  identity    E_i's top-1 identity classification of every frame of A's held-out clip (seen and
              self sets: identities with a training label).
  generation  SSIM, PSNR, mouth and pose errors and their ratios to the static-mouth and
              reference-pose baselines, identity error, audio-to-mouth lag of the generated video.

  pcavs-jax evaluate-synthtalk --checkpoint WORKDIR_OR_CKPT --eval-set DIR/cross_driven/eval_set.npz
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import time

import numpy as np

RATIO_BASELINES = {"mouth_ratio": ("mouth_err", "static_mouth"),
                   "pose_ratio": ("pose_err", "reference_pose")}
ROW_KEYS = ("ssim", "psnr", "mouth_ratio", "pose_ratio", "mouth_err", "pose_err", "identity_err",
            "lag", "abs_lag", "sync")
MECHANISM_KEYS = ("sync_top1", "sync_top1_ceiling", "sync_lag", "pose_code_r2", "identity_top1")
POSE_ANGLES = ("yaw", "pitch", "roll")
SYNC_CANDIDATES = 8


def generate_cross_driven(model, variables, eval_set, batch_size: int = 16,
                          triples=None) -> dict[str, np.ndarray]:
  """Drives every triple of `eval_set` (or those named in `triples`) in memory:
  {triple_id: (T, H, W, 3) uint8}."""
  from pcavs_jax.infer.inference import FrameDriver, eval_set_jobs
  driver = FrameDriver(model, variables, batch_size)
  if eval_set.resolution != driver.resolution:
    raise ValueError(f"eval set frames are {eval_set.resolution} px, the model draws "
                     f"{driver.resolution} px")
  return {job.name: driver.drive_job(job) for job in eval_set_jobs(eval_set)
          if triples is None or job.name in triples}


def target_ratios(model: dict, baselines: dict) -> dict[str, float]:
  """The ratios the targets are judged by: mouth error / static-mouth baseline's, pose error /
  reference-pose baseline's."""
  return {ratio: model[key] / baselines[name][key]
          for ratio, (key, name) in RATIO_BASELINES.items()}


def load_baselines(set_path, eval_set, triples=None) -> dict[str, dict]:
  """The baselines' rows of a set (from its baselines file, else scored now), averaged over
  `triples` (default: all)."""
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.evaluate import scoring
  ids = list(triples or [t.triple_id for t in eval_set.triples])
  path = eval_sets.baselines_path(set_path)
  if path.exists():
    stored = json.loads(path.read_text())
  else:
    sub = eval_sets.EvalSet(eval_set.resolution, [eval_set[i] for i in ids])
    stored = scoring.baseline_scores(sub, names=tuple(n for _, n in RATIO_BASELINES.values()) +
                                     ("copy_reference",))
  return {name: scoring.summarise({i: s["per_triple"][i] for i in ids})
          for name, s in stored.items() if isinstance(s, dict) and "per_triple" in s}


def generation_rows(generated: dict[str, np.ndarray], eval_set, baselines: dict[str, dict]
                    ) -> tuple[dict[str, dict], dict[str, dict]]:
  """Scores generated videos of the triples they name: ({'model': row, baseline: row, ...},
  the model's per-triple scores); every row carries the ratios (`target_ratios`)."""
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.evaluate import scoring
  sub = eval_sets.EvalSet(eval_set.resolution, [eval_set[i] for i in generated])
  result = scoring.score(generated, sub)
  per_triple = result.pop("per_triple")
  rows = {"model": result, **baselines}
  ok = all(name in baselines for _, name in RATIO_BASELINES.values())
  for row in rows.values():
    row.update(target_ratios(row, baselines) if ok else {k: math.nan for k in RATIO_BASELINES})
  return rows, per_triple


# ----------------------------------------------------------------------------- mechanisms


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
  hits = []
  for i, others in enumerate(sync_negatives(audio_clips, candidates)):
    a = _unit(audio[i])
    for t in range(len(a)):
      cand = [visual[i][t]] + [visual[j][t % len(visual[j])] for j in others]
      sims = _unit(np.stack(cand)) @ a[t]
      hits.append(float(sims[0] > sims[1:].max()) if others else math.nan)
  curves = []
  for v, a in zip(visual, audio):
    v, a = _unit(v - v.mean(0)), _unit(a - a.mean(0))
    curves.append([np.mean(np.sum(a[max(-l, 0):len(a) - max(l, 0)] * v[max(l, 0):len(v) + min(l, 0)], -1))
                   for l in range(-max_lag, max_lag + 1)])
  curves = np.asarray(curves)
  lags = np.arange(-max_lag, max_lag + 1)
  return {"sync_top1": float(np.mean(hits)) if hits and np.isfinite(hits).all() else math.nan,
          "sync_lag": float(lags[np.argmax(curves.mean(0))]),
          "sync_lag0": float(np.mean(lags[np.argmax(curves, axis=1)] == 0))}


def _fit_rows(groups: np.ndarray) -> np.ndarray:
  """The rows a held-out read-out fits: the first two thirds of the groups (triples), or of the
  rows when there are fewer than 3 groups."""
  n = int(groups.max()) + 1
  if n >= 3:
    return groups < (2 * n) // 3
  return np.arange(len(groups)) < (2 * len(groups)) // 3


def mechanism_measures(codes: dict[str, list[np.ndarray]], eval_set) -> dict[str, float]:
  """Sync, pose code and identity measures of one set from `encode_set`'s features (see the
  module docstring); identity_top1 is NaN for sets without training labels."""
  from pcavs_jax.data.synthtalk import render
  clips = [t.audio_clip for t in eval_set.triples]
  out = sync_retrieval(codes["visual_mouth"], codes["audio_mouth"], clips)
  out["sync_top1_ceiling"] = sync_ceiling(
      [np.stack([t.truth[k] for k in render.MOUTH_KEYS], 1) for t in eval_set.triples], clips)
  groups = np.concatenate([np.full(t.num_frames, i) for i, t in enumerate(eval_set.triples)])
  truth = np.concatenate([np.stack([t.truth[k] for k in POSE_ANGLES], 1)
                          for t in eval_set.triples])
  r2 = heldout_r2(np.concatenate(codes["pose_code"]), truth, _fit_rows(groups))
  out["pose_code_r2"] = float(np.mean(r2))
  out.update({f"pose_code_r2_{k}": float(v) for k, v in zip(POSE_ANGLES, r2)})
  scored = codes["class_scores"]
  out["identity_top1"] = float(np.mean(np.concatenate(
      [np.argmax(s, -1) == label for label, s in scored]))) if scored else math.nan
  return out


# ----------------------------------------------------------------------------- reports


def evaluate_set(model, variables, set_path, eval_set=None, batch_size: int = 32,
                 triples=None, generated: bool = False) -> dict:
  """Every measure of one set: {'rows': generation rows, 'mechanisms': ..., 'per_triple': ...}
  (+ 'generated' frames when asked). `triples` limits the generation (and its baselines) to
  those triple ids; the mechanisms read every triple."""
  from pcavs_jax.data.synthtalk import eval_sets
  eval_set = eval_set or eval_sets.load_eval_set(set_path)
  frames = generate_cross_driven(model, variables, eval_set, batch_size, triples)
  rows, per_triple = generation_rows(frames, eval_set, load_baselines(set_path, eval_set,
                                                                       list(frames)))
  report = {"rows": rows, "per_triple": per_triple,
            "mechanisms": mechanism_measures(encode_set(model, variables, eval_set), eval_set)}
  if generated:
    report["generated"] = frames
  return report


def evaluate_all(checkpoint: str, eval_set_path: str, batch_size: int = 32,
                 step: int | None = None, ema: bool = True, sets=None) -> dict:
  """Every set beside `eval_set_path` (`eval_sets.set_paths`), scored:
  {set: {'model': row, baseline: row, ...}, 'mechanisms': {set: ...}, 'per_triple': {set: ...},
  'generated': {set: frames}}."""
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.checkpoint import load_checkpoint
  model, variables = load_checkpoint(checkpoint, step=step, ema=ema)
  report = {"mechanisms": {}, "per_triple": {}, "generated": {}}
  for name, path in eval_sets.set_paths(eval_set_path).items():
    if sets and name not in sets:
      continue
    one = evaluate_set(model, variables, path, batch_size=batch_size, generated=True)
    report[name] = one["rows"]
    for key in ("mechanisms", "per_triple", "generated"):
      report[key][name] = one[key]
  return report


def evaluate_checkpoint(checkpoint: str, eval_set_path: str, batch_size: int = 32,
                        step: int | None = None, ema: bool = True) -> dict:
  """One set's generation scores: {'model', 'baselines', 'per_triple', 'generated',
  'mechanisms'} (`evaluate_all` scores every set of the folder).

  Args:
    checkpoint: training workdir or exported checkpoint.
    eval_set_path: a SynthTalk set, e.g. `cross_driven/eval_set.npz`.
    batch_size: frames per device per network call.
    step: a training workdir's step (default: its latest).
    ema: a training workdir's moving-average parameters when it kept them (else the trained
      parameters).
  """
  from pcavs_jax.checkpoint import load_checkpoint
  model, variables = load_checkpoint(checkpoint, step=step, ema=ema)
  one = evaluate_set(model, variables, eval_set_path, batch_size=batch_size, generated=True)
  rows = one.pop("rows")
  return {"model": rows.pop("model"), "baselines": rows, **one}


def evaluate_steps(workdir: str, eval_set_path: str, batch_size: int = 32,
                   ema: bool = True, sets=None) -> list[dict]:
  """Scores every checkpoint kept in a training workdir on every set: the learning curves,
  one row per (step, set) with the model's generation scores and the mechanisms."""
  from pcavs_jax.checkpoint import checkpoint_steps
  rows = []
  for step in checkpoint_steps(workdir):
    report = evaluate_all(workdir, eval_set_path, batch_size, step=step, ema=ema, sets=sets)
    rows += [{"step": step, "set": name, **report[name]["model"], **mech}
             for name, mech in report["mechanisms"].items()]
  return rows


def _table(header: str, rows: list[tuple[str, dict]], keys) -> str:
  """A rich table as text (NaN shown as '-')."""
  import io
  from rich.console import Console
  from rich.table import Table
  table = Table(title=header, title_justify="left")
  table.add_column("")
  for k in keys:
    table.add_column(k, justify="right")
  fmt = lambda v: "-" if not isinstance(v, (int, float)) or not math.isfinite(v) else (
      f"{v:.3f}" if isinstance(v, float) else str(v))
  for name, row in rows:
    table.add_row(name, *(fmt(row.get(k)) for k in keys))
  console = Console(file=io.StringIO(), width=200, color_system=None)
  console.print(table)
  return console.file.getvalue().rstrip()


def curve_table(rows: list[dict]) -> str:
  """The learning curves, one table per set."""
  keys = ("ssim", "psnr", "mouth_ratio", "pose_ratio", "identity_err", "lag") + MECHANISM_KEYS
  sets = list(dict.fromkeys(r.get("set", "") for r in rows))
  return "\n".join(_table(f"{name} set, per step", [(str(r["step"]), r) for r in rows
                                                     if r.get("set", "") == name], keys)
                   for name in sets)


def summary_table(report: dict) -> str:
  """The model's rows beside the baselines per set, and the mechanisms of every set.

  Accepts `evaluate_all`'s report, or `evaluate_checkpoint`'s (one set)."""
  if "model" in report:
    report = {"set": {"model": report["model"], **report["baselines"]},
              "mechanisms": {"set": report.get("mechanisms", {})}}
  sets = [k for k in report if k not in ("mechanisms", "per_triple", "generated")]
  parts = [_table(f"{name} identities: generation (ratios: error / static-mouth or "
                  f"reference-pose baseline's)", list(report[name].items()), ROW_KEYS)
           for name in sets]
  mechanisms = report.get("mechanisms", {})
  if mechanisms:
    keys = MECHANISM_KEYS + ("sync_lag0",)
    parts.append(_table("mechanisms (sync top-1 chance 0.125)", list(mechanisms.items()), keys))
  return "\n".join(parts)


class TrainingProbe:
  """The mechanism measures and a small generation check, for the training loop.

  Loads the sets of a `cross_driven` folder once; each call scores the given variables:
  mechanisms on every triple, generation on the first `num_triples` triples of each set
  (the baselines averaged over the same triples). Returns flat scalars, '<set>/<measure>'.
  """

  def __init__(self, model, folder: str, num_triples: int = 8, batch_size: int = 32):
    from pcavs_jax.data.synthtalk import eval_sets
    self.model = model
    self.batch_size = batch_size
    self.sets = {}
    for name, path in eval_sets.set_paths(folder).items():
      eval_set = eval_sets.load_eval_set(path)
      if eval_set.resolution != model.resolution:
        continue
      ids = [t.triple_id for t in eval_set.triples[:num_triples]] if num_triples else []
      self.sets[name] = (path, eval_set, ids, load_baselines(path, eval_set, ids) if ids else {})

  def __call__(self, variables) -> dict[str, float]:
    start = time.time()
    out = {}
    for name, (path, eval_set, ids, baselines) in self.sets.items():
      mech = mechanism_measures(encode_set(self.model, variables, eval_set), eval_set)
      out.update({f"{name}/{k}": v for k, v in mech.items()})
      if ids:
        frames = generate_cross_driven(self.model, variables, eval_set, self.batch_size, ids)
        rows, _ = generation_rows(frames, eval_set, baselines)
        out.update({f"{name}/{k}": float(rows["model"][k]) for k in ROW_KEYS})
        out[f"{name}/copy_reference_ssim"] = baselines.get("copy_reference", {}).get("ssim", math.nan)
    out["probe_seconds"] = time.time() - start
    return out


def training_probe(config, model) -> TrainingProbe | None:
  """The probe a training run logs every `config.eval_every` steps: None unless that is set
  and the eval folder (`config.eval_dir`, default <data_dir>/cross_driven) holds a set."""
  from pcavs_jax.data.synthtalk import eval_sets
  if not config.get("eval_every"):
    return None
  folder = config.get("eval_dir") or str(pathlib.Path(config.data_dir) / "cross_driven")
  if not pathlib.Path(folder).is_dir() or not eval_sets.set_paths(folder):
    return None
  return TrainingProbe(model, folder, config.get("eval_triples", 8))


# ----------------------------------------------------------------------------- code probes

POSE_KEYS = ("yaw", "pitch", "roll", "tx", "ty")


def heldout_r2(features: np.ndarray, targets: np.ndarray, train: np.ndarray,
               ridge: float = 1e-3) -> np.ndarray:
  """R^2 on the held-out rows of a ridge-regularised linear fit of targets from features.

  Args:
    features: (N, F); targets: (N, K); train: (N,) bool, the rows the fit sees.

  Returns:
    (K,) R^2 over the rows not in `train`: 1 for an exact linear code, <= 0 when the features
    tell nothing linear about the target.
  """
  x = np.asarray(features, np.float64)
  mean, std = x[train].mean(0), x[train].std(0) + 1e-8
  x = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
  y = np.asarray(targets, np.float64)
  a = x[train]
  w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ y[train])
  test = ~train
  resid = ((x[test] @ w - y[test]) ** 2).sum(0)
  total = ((y[test] - y[test].mean(0)) ** 2).sum(0)
  return 1.0 - resid / np.maximum(total, 1e-12)


def probe_codes(model, variables, eval_set, batch_size: int = 32) -> dict[str, dict[str, float]]:
  """What E_n's codes carry and what G's pose follows, on SynthTalk's held-out identities.

  - `pose_code_r2` / `mouth_feature_r2`: held-out R^2 of a linear read-out of each truth quantity
    (pose keys, mouth_open) from the pose code / the visual mouth feature of the truth frames,
    fitted on the first two thirds of the triples and scored on the rest (other identities).
  - `follows_pose_source` / `follows_reference`: correlation over frames between the generated
    frames' measured yaw, pitch, roll and the pose source's truth (reference fixed), and the
    reference's truth (reference varying, pose source fixed); mean over triples.
  """
  import jax
  import jax.numpy as jnp
  from pcavs_jax.data.synthtalk import analyzer
  from pcavs_jax.evaluate import scoring
  from pcavs_jax.data import audio as audio_lib

  drive = jax.jit(lambda v, r, m, p: model.apply(v, r, m, p, method=model.infer)["driven"])
  to_model = lambda frames: jnp.asarray(frames, jnp.float32) / 127.5 - 1.0
  keys = POSE_KEYS + ("mouth_open",)
  follows = {"follows_pose_source": [], "follows_reference": []}
  for tr in eval_set.triples:
    t = tr.num_frames
    mel = jnp.asarray(audio_lib.mel_windows(tr.mel, 1))
    first = lambda frames: np.repeat(frames[:1], t, axis=0)
    for name, refs, poses, truth in (
        ("follows_pose_source", first(tr.reference_frames), tr.pose_frames[:t], tr.truth),
        ("follows_reference", tr.reference_frames[:t], first(tr.pose_frames), tr.reference_truth)):
      frames = np.concatenate([
          np.asarray(drive(variables, to_model(refs[s:s + batch_size]),
                           jnp.repeat(mel, len(refs[s:s + batch_size]), axis=0),
                           to_model(poses[s:s + batch_size])))
          for s in range(0, t, batch_size)])
      measured = analyzer.analyze_frames(
          scoring.to_uint8(frames, eval_set.resolution, value_range=(-1.0, 1.0)))
      # The lag-0 correlation of the scoring's cross-correlation (NaN frames take the mean).
      follows[name].append([scoring.lagged_correlation(measured[k], truth[k][:t], 0)[2]
                            for k in ("yaw", "pitch", "roll")])
  codes = encode_set(model, variables, eval_set, batch_size)
  groups = np.concatenate([np.full(t.num_frames, i) for i, t in enumerate(eval_set.triples)])
  truths = np.concatenate([np.stack([t.truth[k] for k in keys], 1) for t in eval_set.triples])
  report = {}
  for name, feats in (("pose_code_r2", codes["pose_code"]),
                      ("mouth_feature_r2", codes["visual_mouth"])):
    report[name] = dict(zip(keys, heldout_r2(np.concatenate(feats), truths,
                                             _fit_rows(groups)).tolist()))
  for name, rows in follows.items():
    report[name] = dict(zip(("yaw", "pitch", "roll"), np.mean(np.asarray(rows), 0).tolist()))
  return report


def write_videos(generated: dict[str, np.ndarray], eval_set_path: str, out_dir: str) -> None:
  """One mp4 per triple with C's audio: the generate command's panel, the truth as last column."""
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.infer.inference import eval_set_jobs, panel_frame
  from pcavs_jax.data.media import write_video
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  for job in eval_set_jobs(eval_sets.load_eval_set(eval_set_path)):
    frames = generated[job.name]
    write_video(out / f"{job.name}.mp4", (panel_frame(job, f, t) for t, f in enumerate(frames)),
                audio=job.wav)


def write_report(report: dict, path: pathlib.Path, eval_set_path: str,
                 videos: str | None = None) -> dict:
  """Writes `evaluate_all`'s report as JSON (without the frames; with each set's videos in
  videos/<set>/ when asked) and returns what was written."""
  from pcavs_jax.data.synthtalk import eval_sets
  generated = report.pop("generated")
  path.write_text(json.dumps(report, indent=1, default=float))
  if videos:
    for name, set_path in eval_sets.set_paths(eval_set_path).items():
      if name in generated:
        write_videos(generated[name], str(set_path), str(pathlib.Path(videos) / name))
  return report


def register(subparsers) -> None:
  p = subparsers.add_parser("evaluate-synthtalk",
                            help="seen / unseen cross-driven generation, mechanisms, exact scores",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="training workdir or exported checkpoint")
  p.add_argument("--eval-set", required=True,
                 help="SynthTalk OUT/cross_driven/eval_set.npz (or the folder): every set "
                      "beside it is scored (unseen, seen, self)")
  p.add_argument("--sets", default=None, help="comma-separated sets to score (default: all)")
  p.add_argument("--report", default=None, help="JSON report path (default: beside the checkpoint)")
  p.add_argument("--videos", default=None,
                 help="also write each triple as mp4 (with C's audio) in VIDEOS/<set>/")
  p.add_argument("--all-steps", action="store_true",
                 help="score every checkpoint kept in the workdir (the learning curve); the "
                      "rows go to <workdir>/synthtalk_curve.jsonl (_raw with --no-ema)")
  p.add_argument("--no-ema", dest="ema", action="store_false",
                 help="score a training workdir's trained parameters, not their moving average")
  p.set_defaults(func=run)


def _report_path(args: argparse.Namespace, stem: str, suffix: str) -> pathlib.Path:
  """--report, else <checkpoint>/<stem>[_raw]<suffix> (_raw: the parameters without average)."""
  if args.report:
    return pathlib.Path(args.report)
  return pathlib.Path(args.checkpoint) / f"{stem}{'' if args.ema else '_raw'}{suffix}"


def run(args: argparse.Namespace) -> int:
  sets = args.sets.split(",") if args.sets else None
  if args.all_steps:
    rows = evaluate_steps(args.checkpoint, args.eval_set, ema=args.ema, sets=sets)
    print(curve_table(rows))
    path = _report_path(args, "synthtalk_curve", ".jsonl")
    path.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
    print(f"curve: {path}")
    return 0
  report = evaluate_all(args.checkpoint, args.eval_set, ema=args.ema, sets=sets)
  print(summary_table(report))
  path = _report_path(args, "synthtalk_eval", ".json")
  write_report(report, path, args.eval_set, args.videos)
  print(f"report: {path}")
  return 0
